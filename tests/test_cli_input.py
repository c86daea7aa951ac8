"""The three CLIs as a user meets them: bad input is exit 2 with one sentence before anything
starts; --version; joined words, -k/-n and SWARM_BROKER reach the broker; --peers reads well
in a pipe. A raw fake broker on loopback stands in where only the wire matters."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from common import __version__
from common import frames as F
from tests.cli_fakes import FakeBroker, winner_final
from tests.conftest import BIN


def cli(*args: str, env: dict | None = None, input: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=60, input=input, env={**os.environ, **(env or {})})


def assert_usage_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    for word in words:
        assert word in errors[0], errors[0]


@pytest.fixture
def fake():
    answers = {F.SERVICE_GENERATE: [(winner_final("Rayleigh scattering."), True)]}
    broker = FakeBroker(lambda seen: answers.get(seen.service, []))
    broker.answers = answers
    yield broker
    broker.close()


# -- 15: bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("bind, words", [
    ("tcp://127.0.0.1:99999", ["99999", "between 0 and 65535"]),
    ("127.0.0.1:7557", ["tcp://HOST:PORT"]),
])
def test_broker_refuses_a_bad_bind(bind, words):
    assert_usage_error(cli("swarm-broker", "--bind", bind), "--bind", *words)


@pytest.mark.parametrize("args", [
    ("swarm-broker", "--heartbeat-s", "nan"),
    ("swarm-broker", "--timeout-s", "inf"),
    ("swarm-broker", "--first-token-timeout-s", "-inf"),
    ("swarm-broker", "--peer-timeout", "w1=nan"),
    ("swarm-worker", "--heartbeat-s", "nan"),
    ("swarm-worker", "--timeout-hint-s", "inf"),
    ("swarm-worker", "--reconnect-s", "nan"),
    ("swarm-ask", "--temperature", "nan", "hi"),
    ("swarm-ask", "--timeout-s", "inf", "hi"),
    ("swarm-ask", "--connect-timeout-s", "nan", "hi"),
])
def test_nan_and_inf_are_refused_everywhere(args):
    # before, these got past parsing: a traceback, or a worker and broker that ran on
    assert_usage_error(cli(*args), args[1])


@pytest.mark.parametrize("args", [
    ("swarm-broker", "--heartbeat-s", "1e9"),
    ("swarm-ask", "--temperature", "3", "hi"),
    ("swarm-worker", "--heartbeat-s", "0"),
])
def test_floats_out_of_range_are_refused(args):
    assert_usage_error(cli(*args), args[1])


@pytest.mark.parametrize("args, words", [
    (("--model", "x.gguf", "hi"), ["--local"]),
    (("--instances", "2", "hi"), ["--local"]),
    (("--local", "--peers"), ["--peers", "--local"]),
])
def test_ask_options_that_need_another_are_usage_errors(args, words):
    assert_usage_error(cli("swarm-ask", "--broker", "tcp://127.0.0.1:1", *args), *words)


# -- 16: words, short options, environment, --version --------------------------------------

@pytest.mark.parametrize("tool", ["swarm-ask", "swarm-broker", "swarm-worker"])
def test_every_tool_has_version_and_help_for_every_option(tool):
    r = cli(tool, "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"{tool} {__version__}"
    help_text = cli(tool, "--help").stdout
    options = [line.split()[0] for line in help_text.splitlines()
               if line.strip().startswith("-")]
    assert options, help_text
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("-"):  # an option's help is on its line or the next
            rest = line.strip().split("  ", 1)[1:] or [lines[i + 1].strip()]
            assert rest[0].strip(), f"{tool}: no help for {line.strip()}"


def test_ask_joins_the_words_and_takes_k_and_n(fake):
    r = cli("swarm-ask", "--broker", fake.endpoint, "-k", "2", "-n", "7",
            "Why", "is", "the", "sky", "blue")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Rayleigh scattering."
    body = fake.wait_for(F.SERVICE_GENERATE)[0].body
    assert body["messages"] == [{"role": "user", "content": "Why is the sky blue"}]
    assert body["candidates"] == 2 and body["max_tokens"] == 7


def test_broker_address_from_the_environment_and_the_option_wins(fake):
    r = cli("swarm-ask", "Hello?", env={"SWARM_BROKER": fake.endpoint})
    assert r.returncode == 0, r.stderr
    r = cli("swarm-ask", "--broker", fake.endpoint, "--connect-timeout-s", "2", "Hello?",
            env={"SWARM_BROKER": "tcp://127.0.0.1:1"})
    assert r.returncode == 0, r.stderr
    assert len(fake.wait_for(F.SERVICE_GENERATE, 2)) == 2
    # the worker reads it too: a bad one is named as coming from the environment
    assert_usage_error(cli("swarm-worker", env={"SWARM_BROKER": "nowhere"}), "SWARM_BROKER")


# -- 17: --peers ---------------------------------------------------------------------------

def _peer(name: str, live: bool, error: str | None = None) -> dict:
    metrics = {"requests": 12, "successes": 11, "failures": 1, "timeouts": 1, "wins": 4,
               "latency_mean_s": 1.5, "latency_p95_s": 2.25, "ttft_mean_s": 0.1,
               "tokens_per_s": 42.5, "reliability": 0.9, "last_error": error,
               "last_error_at": None}
    profile = {"name": name, "backend": "llama.cpp", "model": "gemma-3-270m-q4_k_m" * 3}
    return {"name": name, "live": live, "slots": 2 if live else 0, "busy": 1 if live else 0,
            "services": ["generate"], "profile": profile if live else None, "metrics": metrics}


def test_peers_in_a_pipe_fit_80_columns_show_p95_and_rate_and_mark_the_lost(fake):
    peers = [_peer("gpu-box-with-a-rather-long-host-name-indeed", True, "x" * 200),
             _peer("laptop", True), _peer("phone", False, "went silent for 3 s")]
    fake.answers[F.SERVICE_STATUS] = [({"broker": {}, "peers": peers}, True)]
    r = cli("swarm-ask", "--broker", fake.endpoint, "--peers")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert "\x1b" not in r.stdout  # plain text in a pipe
    assert "p95 2.25 s" in r.stdout and "42.5 tok/s" in r.stdout
    phone = [line for line in lines if line.startswith("phone")]
    assert phone and "lost" in phone[0]
    assert all("lost" not in line for line in lines if line.startswith(("gpu-box", "laptop")))


def test_peers_says_no_workers(fake):
    fake.answers[F.SERVICE_STATUS] = [({"broker": {}, "peers": []}, True)]
    r = cli("swarm-ask", "--broker", fake.endpoint, "--peers")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "no workers"


@pytest.mark.parametrize("value", ["7580", "host:", ":80", "127.0.0.1:70000", "h:port"])
def test_broker_refuses_a_bad_http_address(value):
    assert_usage_error(cli("swarm-broker", "--http", value), "--http", value)


@pytest.mark.parametrize("http, key, warned", [
    ("0.0.0.0:7580", None, True), ("192.0.2.7:7580", None, True),
    ("0.0.0.0:7580", "k", False), ("127.0.0.1:7580", None, False),
    ("localhost:7580", None, False), ("[::1]:7580", None, False), ("off", None, False),
])
def test_the_broker_warns_when_its_api_is_open_beyond_loopback_without_a_key(
        monkeypatch, caplog, http, key, warned):
    """Nothing binds: the broker's socket and its serving loop are stood in for."""
    from click.testing import CliRunner

    import broker.cli
    from broker.server import Broker
    monkeypatch.setattr(Broker, "bind", lambda self: "tcp://127.0.0.1:1")
    monkeypatch.setattr(broker.cli, "run_until_signalled", lambda coro, **_: coro.close())
    args = ["--http", http, "--no-mdns"] + (["--api-key", key] if key else [])
    r = CliRunner().invoke(broker.cli.main, args, env={"SWARM_API_KEY": ""})
    assert r.exit_code == 0, r.output
    assert any("without an API key" in rec.getMessage() for rec in caplog.records) == warned


def test_a_busy_http_port_is_one_sentence_and_exit_1():
    import socket

    from tests.conftest import free_port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        r = cli("swarm-broker", "--bind", f"tcp://127.0.0.1:{free_port()}", "--no-mdns",
                "--http", f"127.0.0.1:{port}")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in r.stderr and "in use" in r.stderr


# -- issue 8: the per-job knobs ------------------------------------------------------------

def test_ask_maps_the_sampling_knobs_onto_the_job_and_defaults_to_the_contract(fake):
    from common.bodies import GenerateRequest, Sampling
    r = cli("swarm-ask", "--broker", fake.endpoint, "--top-p", "0.9",
            "--temperature-spread", "0.4", "--greedy", "--no-quorum", "--strategy", "majority",
            "Why?")
    assert r.returncode == 0, r.stderr
    body = fake.wait_for(F.SERVICE_GENERATE)[0].body
    assert body["top_p"] == 0.9 and body["temperature_spread"] == 0.4
    assert body["greedy"] is True and body["quorum"] is False
    assert body["strategy"] == "majority"
    # no knob given: the job carries the contract's defaults (common/bodies.py)
    assert cli("swarm-ask", "--broker", fake.endpoint, "Why?").returncode == 0
    body = fake.wait_for(F.SERVICE_GENERATE, 2)[1].body
    job = GenerateRequest(Sampling())
    assert (body["temperature_spread"], body["greedy"], body["quorum"], body["top_p"],
            body["strategy"]) == (job.spread, job.greedy, job.quorum, job.sampling.top_p,
                                  job.strategy)


@pytest.mark.parametrize("args", [
    ("--temperature-spread", "2.5"), ("--temperature-spread", "-0.1"),
    ("--temperature-spread", "nan"), ("--top-p", "1.5"), ("--top-p", "inf"),
])
def test_ask_refuses_knobs_out_of_range(args):
    assert_usage_error(cli("swarm-ask", "--broker", "tcp://127.0.0.1:1", *args, "hi"),
                       args[0], "is not")  # out of range, not an unknown option


def test_ask_shows_the_explained_vote_on_stderr_and_only_the_answer_on_stdout(fake):
    from tests.test_cli_render import explained
    fake.answers[F.SERVICE_GENERATE] = [(explained(), True)]
    r = cli("swarm-ask", "--broker", fake.endpoint, "What is 6 x 7?")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "It is 42.\n"  # a pipe gets the answer alone
    lines = r.stderr.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["cand", "peer"])
    assert lines[head + 2].split()[:3] == ["*", "1", "w2"]  # the winner's row, marked
    assert "vote (majority): 2 of 4 candidates answered 42" in lines
    assert "early quorum: 1 cancelled, ~1.3 s saved" in lines
    assert lines[-1].startswith("winner: candidate 1 from w2")
    r = cli("swarm-ask", "--broker", fake.endpoint, "--json", "What is 6 x 7?")
    assert json.loads(r.stdout)["vote"]["method"] == "majority"


def test_a_liveness_past_what_a_float_holds_is_refused_not_a_traceback():
    assert_usage_error(cli("swarm-broker", "--liveness", str(10**400)), "--liveness")
