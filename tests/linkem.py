"""A userspace link emulator: two network namespaces joined by a slow, lossy wire.

Where the kernel has no `sch_netem` (nor tc classifiers), this plays netem's part for the
tests. It opens two TUN devices (IFF_TUN | IFF_NO_PI), moves each into its own namespace
(the fd keeps working there), gives them point-to-point addresses, and forwards each IP
packet read from one to the other after a fixed one-way delay, dropping each one on its
own with probability `loss` (a seeded RNG, so a run repeats). Only the two namespaces
named carry its traffic. It writes its counters (forwarded, dropped) as JSON to `--stats`
every half second and when it stops (SIGTERM, SIGINT).

    python tests/linkem.py --ns-a swA --ns-b swB --delay-ms 200 --loss 0.05 --stats s.json

`Link` is the pure part (queue, delay, loss), tested without devices.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import subprocess
import time
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65536
STATS_EVERY_S = 0.5


class Link:
    """Packets in flight: each offered one is dropped or becomes due `delay_s` later."""

    def __init__(self, delay_s: float, loss: float, seed: int):
        self.delay_s, self.loss = delay_s, loss
        self.rng = random.Random(seed)
        self.queue: list[tuple[float, int, int, bytes]] = []  # (due, order, to, packet)
        self.order = 0
        self.stats = {"forwarded": 0, "dropped": 0, "bytes": 0}

    def offer(self, packet: bytes, to: int, now: float) -> bool:
        """Take a packet for `to`; False if the wire lost it."""
        if self.rng.random() < self.loss:
            self.stats["dropped"] += 1
            return False
        self.order += 1
        heapq.heappush(self.queue, (now + self.delay_s, self.order, to, packet))
        return True

    def due(self, now: float) -> list[tuple[int, bytes]]:
        """The packets whose time has come, oldest first, as (to, packet)."""
        out = []
        while self.queue and self.queue[0][0] <= now:
            _, _, to, packet = heapq.heappop(self.queue)
            self.stats["forwarded"] += 1
            self.stats["bytes"] += len(packet)
            out.append((to, packet))
        return out

    def wait_s(self, now: float, most_s: float) -> float:
        return max(0.0, min(most_s, self.queue[0][0] - now)) if self.queue else most_s


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def plumb(name: str, ns: str, local: str, peer: str) -> None:
    """Move the device into its namespace and give it a point-to-point address there."""
    ip("link", "set", name, "netns", ns)
    ip("-n", ns, "link", "set", name, "addrgenmode", "none")  # no IPv6 chatter on the wire
    ip("-n", ns, "addr", "add", local, "peer", peer, "dev", name)
    ip("-n", ns, "link", "set", name, "up")
    ip("-n", ns, "link", "set", "lo", "up")


def write_stats(path: Path, link: Link) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**link.stats, "in_flight": len(link.queue)}))
    tmp.replace(path)


def forward(fds: tuple[int, int], link: Link, stats: Path, stopping: list[bool]) -> None:
    """Read from both ends, hand each packet to the other end when it is due."""
    other = {fds[0]: fds[1], fds[1]: fds[0]}
    next_stats = 0.0
    while not stopping:
        now = time.monotonic()
        readable, _, _ = select.select(list(fds), [], [], link.wait_s(now, STATS_EVERY_S))
        now = time.monotonic()
        for fd in readable:
            try:
                while True:
                    link.offer(os.read(fd, MAX_PACKET), other[fd], now)
            except BlockingIOError:
                pass
        for to, packet in link.due(now):
            try:
                os.write(to, packet)
            except OSError:  # the device is down or gone: the packet is lost, as on a wire
                link.stats["dropped"] += 1
        if now >= next_stats:
            write_stats(stats, link)
            next_stats = now + STATS_EVERY_S


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns-a", required=True)
    ap.add_argument("--ns-b", required=True)
    ap.add_argument("--addr-a", default="10.78.0.1")
    ap.add_argument("--addr-b", default="10.78.0.2")
    ap.add_argument("--delay-ms", type=float, default=200.0, help="one way")
    ap.add_argument("--loss", type=float, default=0.05, help="per packet, each way")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stats", type=Path, required=True)
    args = ap.parse_args(argv)
    if not 0.0 <= args.loss < 1.0 or args.delay_ms < 0:
        ap.error("--loss must be in [0, 1) and --delay-ms not negative")
    tag = f"lem{os.getpid() % 100000}"
    names = (f"{tag}a", f"{tag}b")
    fds = (open_tun(names[0]), open_tun(names[1]))
    plumb(names[0], args.ns_a, args.addr_a, args.addr_b)
    plumb(names[1], args.ns_b, args.addr_b, args.addr_a)
    link = Link(args.delay_ms / 1000.0, args.loss, args.seed)
    stopping: list[bool] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    try:
        forward(fds, link, args.stats, stopping)
    finally:
        write_stats(args.stats, link)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    main()
