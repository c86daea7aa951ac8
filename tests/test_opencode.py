"""The real opencode CLI against a real swarm (issue 7): `opencode run` through
swarm-broker --http, a real worker and the bundled model, on loopback only.

opencode sends its whole agent prompt with every question: a 9.7 KB system prompt and ten
tool schemas, about 7,300 tokens of the bundled model's prompt, streamed, with
stream_options.include_usage and tool_choice "auto" (tests/opencode_cli.py keeps it on
loopback). One candidate of that took 100 s on a busy 2-core machine, hence the generous
limits; the worker's default context (--n-ctx auto) holds it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import opencode_cli
from tests.conftest import ask, free_port, wait_for_peers

pytestmark = pytest.mark.model
RUN_TIMEOUT_S = 900.0


@pytest.fixture(scope="session")
def opencode() -> Path:
    try:
        return opencode_cli.install()
    except opencode_cli.OpencodeUnavailable as e:
        pytest.skip(str(e))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


def _answered(port: int) -> int:
    """Candidates the swarm's peers answered, from the broker's own status."""
    r = ask("--broker", f"tcp://127.0.0.1:{port}", "--peers", "--json", "--timeout-s", "5")
    peers = json.loads(r.stdout) if r.returncode == 0 else []
    return sum(p["metrics"]["successes"] for p in peers)


@pytest.mark.timeout(RUN_TIMEOUT_S + 180)
def test_opencode_run_answers_through_the_swarm(procs, model_path, opencode, tmp_path):
    # Given a swarm with its OpenAI API on loopback, and opencode configured as the README says
    port, http = free_port(), free_port()
    broker = procs.broker(port, "--http", f"127.0.0.1:{http}", "--no-mdns",
                          "--timeout-s", str(int(RUN_TIMEOUT_S)))
    # the worker's default context (--n-ctx auto: the model's trained 32k here) holds the prompt
    procs.worker(port, "w1", "--model", str(model_path), "--no-mdns")
    wait_for_peers(port, {"w1"}, timeout_s=120)
    home = tmp_path / "home"
    env = opencode_cli.contained_env(home)
    opencode_cli.seed_config_dir(home)
    config = opencode_cli.provider_config(f"http://127.0.0.1:{http}/v1", output_tokens=48,
                                          swarm={"candidates": 2})
    project = opencode_cli.write_project(tmp_path, config)

    # When opencode asks one question
    try:
        r = subprocess.run([str(opencode), "run", "What is the capital of France?",
                            "--model", "swarm/swarm"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"opencode run did not end in {RUN_TIMEOUT_S:.0f} s (a 5xx is "
                             f"retried for ever); broker log:\n{_tail(broker.log_path)}") from e

    # Then it exits 0 with the swarm's answer on stdout, and the worker wrote it
    logs = sorted((home / ".local/share/opencode/log").glob("*.log"))
    why = (f"stdout: {r.stdout!r}\nstderr: {r.stderr[-2000:]}\nbroker log:\n"
           f"{_tail(broker.log_path)}\nopencode log:\n{_tail(logs[-1]) if logs else '(none)'}")
    assert r.returncode == 0, why
    assert r.stdout.strip(), why
    assert _answered(port) >= 2, why  # the title request and the question, at least
