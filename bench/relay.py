"""Relay throughput: the same PARTIALs through a bare pyzmq ROUTER loop (the ceiling) and
through the real broker to a real client, measured alternately in one run; and the real
synthetic worker end to end.

    python bench/relay.py --quick              # what `make bench` runs
    python bench/relay.py --profile prof.txt   # the broker runs under pyinstrument

One sender process (bench/relay_peers.py) blasts COUNT one-token PARTIALs per request,
blocking on a full pipe, to each relay. The client reads every reply and, once the clock
stopped, checks that the token events joined are the FINAL's text (`complete`). Rates run
from the first token's arrival to the FINAL's; each row is the median over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ROOT, QUIET, Swarm, free_port, stop, wait_for_slots  # noqa: E402
from bench.relay_peers import MODEL, read_replies  # noqa: E402
from bench.report import plot, table  # noqa: E402
from common import frames as F  # noqa: E402
from common.bodies import MAX_TOKENS, GenerateRequest, Sampling, Task  # noqa: E402
from common.codec import pack, unpack  # noqa: E402
from common.messages import ClientRequest  # noqa: E402

PEERS = str(Path(__file__).resolve().parent / "relay_peers.py")
TIMEOUT_S = 300.0


def peer(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, PEERS, *args], cwd=ROOT, **QUIET)


def ask(endpoint: str, frames: list[bytes], worker_frames: bool) -> dict:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 0)  # the client never makes a relay wait: it reads it all
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        return read_replies(sock, TIMEOUT_S, worker_frames)
    finally:
        sock.close()


def bare_round(endpoint: str, count: int) -> dict:
    task = Task("bare", 0, 1, Sampling(prompt="relay")).to_map()
    got = ask(endpoint, ClientRequest(F.SERVICE_GENERATE, (pack(task),)).to_frames(), True)
    chunks = [unpack(b) for b in got["partials"]]
    first = got["times"][0] if chunks else got["last"]
    return _row(count, len(chunks), sum(c.get("tokens", 1) for c in chunks),
                "".join(c["text"] for c in chunks) == got["final"]["text"], got["last"] - first)


def broker_round(endpoint: str, count: int, model: str) -> dict:
    request = GenerateRequest(Sampling(prompt="relay", max_tokens=min(count, MAX_TOKENS)),
                              candidates=1, stream="live", model=model, timeout_s=TIMEOUT_S)
    got = ask(endpoint, ClientRequest(F.SERVICE_GENERATE, (pack(request.to_map()),)).to_frames(),
              False)
    events = [unpack(b) for b in got["partials"]]
    tokens = [(e, t) for e, t in zip(events, got["times"]) if e.get("event") == "token"]
    first = tokens[0][1] if tokens else got["last"]
    winner = got["final"].get("winner") or {}
    text = "".join(e["text"] for e, _ in tokens)
    return _row(count, len(tokens), tokens[-1][0]["tokens"] if tokens else 0,
                bool(winner) and text == winner.get("text"), got["last"] - first)


def _row(sent: int, events: int, tokens: int, complete: bool, took_s: float) -> dict:
    took_s = max(took_s, 1e-9)
    return {"msgs_s": sent / took_s, "events_s": events / took_s, "tokens_s": tokens / took_s,
            "tokens": tokens, "complete": complete}


def median(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def run(count: int, rounds: int, profile: str | None) -> None:
    synth_tokens = min(count, MAX_TOKENS)
    bare_at = f"tcp://127.0.0.1:{free_port()}"
    prefix = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", profile] if profile else []
    procs = [peer("bare", bare_at)]
    procs.append(peer("sender", bare_at, str(count)))
    results: dict[str, list[dict]] = {"bare": [], "broker": [], "synthetic": []}
    with Swarm(slots=[1], tokens=synth_tokens, broker_prefix=prefix) as swarm:
        procs.append(peer("sender", swarm.endpoint, str(count)))
        try:
            asyncio.run(wait_for_slots(swarm.endpoint, 2))
            for r in range(rounds):  # alternate which goes first
                pair = [("bare", lambda: bare_round(bare_at, count)),
                        ("broker", lambda: broker_round(swarm.endpoint, count, MODEL))]
                for name, measure in pair if r % 2 == 0 else pair[::-1]:
                    results[name].append(measure())
                results["synthetic"].append(broker_round(swarm.endpoint, synth_tokens,
                                                         "synthetic"))
                print(f"round {r + 1}/{rounds}: " + ", ".join(
                    f"{k} {v[-1]['msgs_s']:,.0f} msgs/s" for k, v in results.items()), flush=True)
            usage = swarm.broker_usage()
        finally:
            stop(procs)
    report(results, count, synth_tokens, usage)


def report(results: dict[str, list[dict]], count: int, synth_tokens: int, usage: dict) -> None:
    bare_rate = median(results["bare"], "msgs_s")
    rows, names = [], {"bare": "bare ROUTER relay", "broker": "swarm-broker",
                       "synthetic": "synthetic worker, end to end"}
    for key, label in names.items():
        rs = results[key]
        rows.append([label, count if key != "synthetic" else synth_tokens,
                     round(median(rs, "msgs_s")), round(median(rs, "events_s")),
                     round(median(rs, "tokens_s")), round(median(rs, "msgs_s") / bare_rate, 3),
                     all(r["complete"] for r in rs)])
    table(f"Relay throughput ({len(results['bare'])} rounds, medians; broker "
          f"{usage['cpu_s']:.1f} CPU-s, peak {usage['peak_mb']:.0f} MB)",
          ["path", "tokens sent", "msgs/s", "events/s", "tokens/s", "vs bare", "complete"], rows)
    plot("relay", "Relay throughput (goal: broker >= 0.8 of bare)", [r[0] for r in rows],
         {"msgs/s": [r[2] for r in rows], "tokens/s": [r[4] for r in rows]},
         ylabel="per second, to the client", kind="bar", goal=0.8 * bare_rate)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds (make bench)")
    ap.add_argument("--count", type=int, help="PARTIALs per request")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--profile", help="run the broker under pyinstrument, its text report here")
    args = ap.parse_args()
    count = args.count or (20_000 if args.quick else 100_000)
    rounds = args.rounds or (3 if args.quick else 7)
    run(count, rounds, str(Path(args.profile).resolve()) if args.profile else None)


if __name__ == "__main__":
    main()
