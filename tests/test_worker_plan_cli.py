"""swarm-worker as a user runs it: --print-profile on this machine, and the flags that
override the plan, in real processes; an MLX model served by a real worker process."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import BIN, ask, free_port, wait_for_peers


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
    assert set(plan) == {"backend", "gpu_layers", "tensor_split", "instances", "threads",
                         "seed_variation"}
    assert all(isinstance(d["reason"], str) and d["reason"] for d in plan.values())
    assert plan["backend"]["value"] == "llama.cpp"
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
    for heading in ("hardware:", "model:", "decisions:", "gpu_layers:", "threads:"):
        assert heading in done.stdout


@pytest.mark.parametrize("args, words", [
    (["--gpu-layers", "lots"], "--gpu-layers must be auto or a whole number"),
    (["--instances", "0"], "--instances"),
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
