"""swarm-worker as a user runs it: --print-profile on this machine, and the flags that
override the plan, in real processes; an MLX model served by a real worker process."""

from __future__ import annotations

import json
import subprocess

import pytest

from common.profile import WorkerProfile
from tests.conftest import BIN, ask, free_port, wait_for_peers
from worker.node import slot_profile


def worker(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "swarm-worker"), *args], capture_output=True, text=True,
                          timeout=timeout_s)


def test_print_profile_json_has_this_machine_the_model_and_each_decision_with_a_reason():
    done = worker("--print-profile", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    hw = out["hardware"]
    assert hw["platform"] == "linux" and hw["cores_logical"] > 0 and hw["ram_total_mb"] > 0
    assert out["model"]["format"] == "gguf" and out["model"]["layers"] == 18
    plan = out["plan"]
    assert set(plan) == {"backend", "n_ctx", "gpu_layers", "tensor_split", "instances",
                         "threads", "seed_variation"}
    assert all(isinstance(d["reason"], str) and d["reason"] for d in plan.values())
    assert plan["backend"]["value"] == "llama.cpp"
    # --n-ctx auto by default: the bundled model's 32k, or what fits in this machine's memory
    assert 4096 <= plan["n_ctx"]["value"] <= 32768 == out["model"]["context_length"]
    assert out["model"]["n_ctx"] == plan["n_ctx"]["value"]
    if not hw["gpus"]:  # this machine, CI: CPU only, all cores to the one instance
        assert plan["gpu_layers"]["value"] == 0
        assert plan["threads"]["value"] == max(1, (hw["cores_physical"] or hw["cores_logical"])
                                               // plan["instances"]["value"])


def test_flags_override_the_plan_and_say_so():
    done = worker("--print-profile", "--json", "--instances", "3", "--threads", "1",
                  "--gpu-layers", "0", "--no-seed-variation")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["plan"]
    assert (plan["instances"]["value"], plan["threads"]["value"], plan["gpu_layers"]["value"],
            plan["seed_variation"]["value"]) == (3, 1, 0, False)
    assert "--instances" in plan["instances"]["reason"]


def test_print_profile_for_people_lists_hardware_model_and_decisions():
    done = worker("--print-profile")
    assert done.returncode == 0, done.stderr
    for heading in ("hardware:", "model:", "decisions:", "n_ctx:", "gpu_layers:", "threads:"):
        assert heading in done.stdout


def test_n_ctx_is_auto_by_default_a_number_or_0_for_the_trained_context():
    def n_ctx(*flag: str) -> dict:
        done = worker("--print-profile", "--json", *flag)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["plan"]["n_ctx"]

    assert n_ctx("--n-ctx", "1024") == {"value": 1024, "reason": "set by --n-ctx"}
    assert n_ctx("--n-ctx", "0") == {"value": 32768,
                                     "reason": "the model's trained context, set by --n-ctx 0"}
    auto = n_ctx("--n-ctx", "AUTO")
    assert 4096 <= auto["value"] <= 32768 and "after headroom" in auto["reason"]


@pytest.mark.model
def test_each_slot_reports_the_context_its_model_loaded(procs, model_path):
    # Given a worker of two instances told --n-ctx 512, and one left to auto
    port = free_port()
    procs.broker(port, "--no-mdns")
    procs.worker(port, "short", "--model", str(model_path), "--no-mdns", "--n-ctx", "512",
                 "--instances", "2")
    procs.worker(port, "auto", "--model", str(model_path), "--no-mdns")
    # When they register; Then every slot's profile says the context llama.cpp loaded
    peers = wait_for_peers(port, {"short", "auto"}, timeout_s=60)
    short, = [p for p in peers if p["name"] == "short"]
    assert short["slots"] == 2 and short["profile"]["n_ctx"] == 512
    auto, = [p["profile"] for p in peers if p["name"] == "auto"]
    assert 4096 <= auto["n_ctx"] <= 32768  # the trained 32k, or what fits in memory here


@pytest.mark.parametrize("args, words", [
    (["--gpu-layers", "lots"], "--gpu-layers must be auto or a whole number"),
    (["--instances", "0"], "--instances"),
    (["--n-ctx", "lots"], "--n-ctx must be auto or a whole number, not 'lots'"),
    (["--n-ctx", "-1"], "--n-ctx must be auto or a whole number from 0 to"),
    (["--backend", "tensorflow"], "--backend"),
    (["--json"], "--json goes with --print-profile"),
    (["--model", "/nonexistent/m.gguf", "--print-profile"], "model /nonexistent/m.gguf does not exist"),
], ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_bad_flags_are_one_sentence_and_nothing_starts(args, words, tmp_path):
    done = worker(*args, "--no-mdns")
    assert done.returncode != 0 and words in done.stderr
    assert "Traceback" not in done.stderr


def test_a_file_that_is_not_gguf_is_refused_before_loading(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 100)
    done = worker("--model", str(junk), "--print-profile")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert str(junk) in done.stderr


def test_a_worker_process_serves_an_mlx_model_directory(procs, tmp_path):
    pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (the test extra brings it)")
    pytest.importorskip("mlx.core", reason="mlx does not import here")
    from tests.mlx_tiny import build_tiny_model
    model = build_tiny_model(tmp_path / "tiny-llama", seed=0)
    done = worker("--model", str(model), "--print-profile", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["plan"]
    assert plan["backend"]["value"] == "mlx" and json.loads(done.stdout)["model"]["format"] == "mlx"
    port = free_port()
    procs.broker(port, "--no-mdns")
    procs.worker(port, "mlx-box", "--model", str(model), "--no-mdns")
    peers = wait_for_peers(port, {"mlx-box"}, timeout_s=60)
    profile = next(p for p in peers if p["name"] == "mlx-box")["profile"]
    assert profile["backend"] == "mlx" and profile["hardware"]["platform"] == "linux"
    res = ask("--broker", f"tcp://127.0.0.1:{port}", "-k", "2", "-n", "8", "--raw", "--json",
              "--temperature", "1.0", "The capital of France is")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {c["peer"] for c in out["candidates"]} == {"mlx-box"}
    assert all(c["ok"] and c["tokens"] > 0 for c in out["candidates"])


def test_every_slot_profile_has_its_own_backends_context():
    class Loaded:
        name, model = "llama.cpp", "m"

        def __init__(self, n_ctx):
            self.n_ctx = n_ctx

    profile = WorkerProfile(name="box", slots=2)
    slots = [slot_profile(profile, i, Loaded(n)) for i, n in enumerate((4096, 2048))]
    assert [(p.slot, p.n_ctx) for p in slots] == [(0, 4096), (1, 2048)]
    assert slot_profile(profile, 0, object()).n_ctx == 0  # a backend that cannot say: unknown
