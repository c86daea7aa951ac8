"""Whether llama.cpp's extra CPU weight buffers (AMX tiles, repacked layouts) work here.

Some virtual machines advertise AMX (`amx_tile` in /proc/cpuinfo) without letting a
program use it: llama.cpp then places the weights in AMX tiles and the first decode dies
of a general protection fault, killing the whole worker. Real AMX hardware is faster with
those buffers. So where the CPU claims AMX, one decode is tried in a child process, once
per CPU, llama.cpp build and model; the verdict is kept in the user cache.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from pathlib import Path

from worker.model_files import cache_dir

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0
_PROBE = """
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, verbose=False)
llm.create_completion("Hello", max_tokens=2)
"""


def _cpu_lines() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return "\n".join(sorted({x for x in lines if x.startswith(("model name", "flags"))}))


def extra_buffers_work(model_path: Path) -> bool:
    """True unless the CPU claims AMX and a decode with the extra buffers crashes."""
    cpu = _cpu_lines()
    if "amx_tile" not in cpu:
        return True
    import llama_cpp
    key = hashlib.sha256(f"{cpu}\n{llama_cpp.__version__}\n{model_path}".encode()).hexdigest()[:16]
    verdict = cache_dir() / f"extra-buffers-{key}"
    if verdict.exists():
        return verdict.read_text().strip() == "ok"
    log.info("this CPU claims AMX: trying llama.cpp's AMX weight buffers in a child process")
    try:
        ok = subprocess.run([sys.executable, "-c", _PROBE, str(model_path)], timeout=PROBE_TIMEOUT_S,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        log.warning("llama.cpp's AMX weight buffers crash on this CPU: loading without them (slower)")
    try:
        verdict.parent.mkdir(parents=True, exist_ok=True)
        verdict.write_text("ok" if ok else "crash")
    except OSError:
        pass  # an unwritable cache only means probing again next time
    return ok
