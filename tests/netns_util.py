"""Network namespaces for tests: the `ip` command, and a skip where none can be made."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def require_namespaces(tag: str, tun: bool = False) -> None:
    """Skip the test where network namespaces (and, with `tun`, TUN devices) cannot be made:
    no `ip`, not root, or a kernel that refuses them (probed with a namespace of `tag`)."""
    if os.name != "posix" or shutil.which("ip") is None:
        pytest.skip("no `ip` command to make network namespaces with")
    if os.geteuid() != 0:
        pytest.skip("making network namespaces needs root")
    if tun and not os.path.exists("/dev/net/tun"):
        pytest.skip("the link emulator needs /dev/net/tun")
    probe = ip("netns", "add", f"{tag}{os.getpid()}probe", check=False)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces cannot be made here: {probe.stderr.strip()}")
    ip("netns", "del", f"{tag}{os.getpid()}probe", check=False)
