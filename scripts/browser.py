"""Make sure Debian's `chromium` is there for the web view's browser test: `make test` calls
this before pytest (never `make run`).

Nothing happens when a chromium is on PATH already. Else, as root with apt-get, it installs
the package (`apt-get install` first; `apt-get update` and a second try only if that
failed), saying up front what and why, and showing apt's log tail only where it fails.
Else one sentence says the browser test will be skipped and how to install chromium. It
never fails `make test` by itself: it always exits 0. Stdlib only: it runs before anything
else is installed.

    python scripts/browser.py LOG [--pretend-missing]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "chromium"
NAMES = ("chromium", "chromium-browser")  # Debian's name, and Ubuntu's
TAIL = 20          # log lines shown when apt fails
INSTALL = ("apt-get", "install", "-y", "--no-install-recommends", PACKAGE)
UPDATE = ("apt-get", "update")
MANUAL = f"sudo apt-get install --no-install-recommends {PACKAGE}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do: `action` is "present", "install" or "skip"; `say` the sentence shown
    first; `tries` the command sequences to run, each tried only if the one before failed
    (a sequence succeeds when all its commands do)."""

    action: str
    say: str
    tries: tuple[tuple[tuple[str, ...], ...], ...] = ()


def decide(browser: str | None, root: bool, apt: bool) -> Plan:
    """The plan for a machine where `browser` is the chromium found on PATH (or None), the
    process is (or is not) root, and apt-get is (or is not) there."""
    if browser:
        return Plan("present", f"Browser for the web view's test: {browser}.")
    if root and apt:
        return Plan("install", f"Installing Debian's {PACKAGE} (headless browser for the web "
                    "view's end-to-end test; once, about 1-3 minutes)...",
                    # the package lists may be stale or empty (a fresh container): update
                    # only then, and try again
                    ((INSTALL,), (UPDATE, INSTALL)))
    why = "not root" if apt else "no apt-get here"
    return Plan("skip", f"No chromium on PATH and it cannot be installed here ({why}): the "
                f"web view's browser test will be skipped; install it with `{MANUAL}`.")


def find_browser() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def _run(step: tuple[str, ...], log) -> int:
    log.write(f"$ {' '.join(step)}\n")
    log.flush()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(step, stdout=log, stderr=subprocess.STDOUT, env=env,
                          check=False).returncode


def attempt(tries, run: Callable[[tuple[str, ...]], int]) -> bool:
    """Run the tries in turn until one succeeds (every command of it exits 0)."""
    return any(all(run(step) == 0 for step in steps) for steps in tries)


def install(plan: Plan, log_path: Path) -> bool:
    """The plan's tries, apt's output going to the log."""
    with open(log_path, "w", encoding="utf-8") as log:
        return attempt(plan.tries, lambda step: _run(step, log))


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    log_path = Path(args[0]) if args else Path("browser-install.log")
    pretend_missing = "--pretend-missing" in argv  # tests the "missing" path without uninstalling
    browser = None if pretend_missing else find_browser()
    apt = shutil.which("apt-get") is not None
    plan = decide(browser, hasattr(os, "geteuid") and os.geteuid() == 0, apt)
    print(plan.say, flush=True)
    if plan.action != "install":
        return 0
    if install(plan, log_path) and (found := find_browser()):
        print(f"  done: {found}")
        return 0
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    print("\n".join(lines[-TAIL:]), file=sys.stderr)
    print(f"Installing {PACKAGE} failed (the whole log is {log_path}): the web view's "
          f"browser test will be skipped; try `{MANUAL}`.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
