"""Install the project into its venv and say what is going on: `make` calls this once.

pip is run verbose, but what it writes goes to `.venv/install.log`; the terminal gets one
sentence up front on what will be built and about how long it takes, then one status line
(the phase, the C++ build's percentage, the time so far), and the log's tail only where pip
fails. Stdlib only: it runs before anything is installed.

    python scripts/install.py LOG -e '.[test]'
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

CORE_MINUTES = 15   # llama-cpp-python from source: about 7-8 minutes on 2 cores
TAIL = 40           # log lines shown when pip fails
TICK_S = {True: 1.0, False: 60.0}  # the status shown again though nothing changed: tty, not
_MAKE = re.compile(r"^\s*\[\s*(\d{1,3})%\]")          # make:  [ 45%] Building ...
_NINJA = re.compile(r"^\s*\[(\d+)/(\d+)\]")            # ninja: [12/156] Building ...
_PHASES = (  # (a line starting with, after stripping: the phase it begins)
    ("Collecting ", "collecting packages"),
    ("Building wheel for llama-cpp-python", "building llama-cpp-python (C++)"),
    ("Building wheel for ", "building wheels"),
    ("Building editable for ", "installing Swarm itself"),
    ("Installing collected packages", "installing packages"),
)


def read_line(line: str) -> tuple[str | None, int | None]:
    """(the phase a line of pip's verbose output begins, or None; the C++ build's percentage
    it shows, or None)."""
    # pip's own steps start at the left margin, its builds two spaces in; the build
    # environments' own installs are indented too, and begin no phase
    phase = next((name for start, name in _PHASES if line.startswith(start)
                  or (start.startswith("Building") and line.startswith("  " + start))), None)
    if m := _MAKE.match(line):
        return phase, min(100, int(m.group(1)))
    if (m := _NINJA.match(line)) and int(m.group(2)):
        return phase, min(100, 100 * int(m.group(1)) // int(m.group(2)))
    return phase, None


def llama_note(cores: int) -> str:
    """What will happen to llama-cpp-python, in one sentence."""
    try:
        return f"llama-cpp-python {metadata.version('llama-cpp-python')} is installed already."
    except metadata.PackageNotFoundError:
        pass
    if _cached_wheel():
        return ("llama-cpp-python: pip reuses the wheel it built before (its cache), unless a "
                "newer release needs building.")
    minutes = max(2, round(CORE_MINUTES / max(1, cores)))
    return (f"llama-cpp-python is compiled from source (C++, once): about {minutes} minutes "
            f"with the {cores} cores here. Later installs reuse it.")


def _cached_wheel() -> bool:
    out = subprocess.run([sys.executable, "-m", "pip", "cache", "list", "--format=abspath"],
                         capture_output=True, text=True, check=False).stdout
    return "llama_cpp_python-" in out


class Status:
    """One line of progress: rewritten in place on a terminal, else a line per step."""

    def __init__(self, tty: bool):
        self.tty, self.start = tty, time.monotonic()
        self.phase, self.percent, self.shown = "starting pip", None, None
        self.lock = threading.Lock()

    def update(self, phase: str | None, percent: int | None) -> None:
        with self.lock:
            if phase is not None and phase != self.phase:
                self.phase, self.percent = phase, None
            if percent is not None:
                self.percent = percent
            self._show(False)

    def tick(self, done: threading.Event) -> None:
        """Show the time going by while pip is quiet (a build that prints nothing)."""
        while not done.wait(TICK_S[self.tty]):
            with self.lock:
                self._show(True)

    def _show(self, force: bool) -> None:
        step = None if self.percent is None else (self.percent if self.tty else self.percent // 10)
        key = (self.phase, step)
        if key == self.shown and not force:
            return
        self.shown = key
        spent = int(time.monotonic() - self.start)
        pct = "" if self.percent is None else f" {self.percent}%"
        text = f"  {self.phase}{pct} ({spent // 60}m{spent % 60:02d}s)"
        if self.tty:
            sys.stdout.write("\r\033[K" + text)
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def end(self) -> None:
        if self.tty:
            sys.stdout.write("\n")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: install.py LOG PIP-INSTALL-ARGS...", file=sys.stderr)
        return 2
    log_path, args = Path(argv[0]), argv[1:]
    cores = os.cpu_count() or 1
    print(f"Installing Swarm and its dependencies into {Path(sys.prefix).name}/ (once; a "
          f"second make reuses it). {llama_note(cores)}")
    print(f"  pip's full output: {log_path}")
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(cores)}
    status, done = Status(sys.stdout.isatty()), threading.Event()
    threading.Thread(target=status.tick, args=(done,), daemon=True).start()
    with open(log_path, "w", encoding="utf-8") as log, subprocess.Popen(
            [sys.executable, "-m", "pip", "install", "-v", *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", env=env) as pip:
        for line in pip.stdout:
            log.write(line)
            status.update(*read_line(line))
        code = pip.wait()
    done.set()
    status.end()
    if code:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        print("\n".join(lines[-TAIL:]), file=sys.stderr)
        print(f"pip failed (exit {code}); the whole log is {log_path}", file=sys.stderr)
        return code
    print(f"  done in {int(time.monotonic() - status.start)} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
