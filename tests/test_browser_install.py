"""scripts/browser.py: what `make test` does about the browser the web view's test drives
(its decisions only: no apt-get is run here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("browser_script", ROOT / "scripts" / "browser.py")
browser = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = browser  # dataclasses look their module up there
_spec.loader.exec_module(browser)


def test_a_browser_on_path_is_used_as_it_is_whoever_runs_make():
    for root in (True, False):
        for apt in (True, False):
            # Given a chromium on PATH, When deciding, Then nothing is installed
            plan = browser.decide("/usr/bin/chromium", root=root, apt=apt)
            assert (plan.action, plan.tries) == ("present", ())
            assert "/usr/bin/chromium" in plan.say


def test_root_with_apt_installs_chromium_and_updates_only_if_the_first_try_failed():
    # Given no browser, root, and apt-get
    plan = browser.decide(None, root=True, apt=True)
    # Then the plan is: install; only if that failed, update and install again
    install = ("apt-get", "install", "-y", "--no-install-recommends", "chromium")
    assert plan.action == "install"
    assert plan.tries == ((install,), (("apt-get", "update"), install))
    assert "chromium" in plan.say and "minutes" in plan.say


def test_without_root_or_apt_the_browser_test_is_skipped_with_a_way_to_install_it():
    for root, apt, why in ((False, True, "not root"), (True, False, "no apt-get"),
                           (False, False, "no apt-get")):
        plan = browser.decide(None, root=root, apt=apt)
        assert (plan.action, plan.tries) == ("skip", ())
        assert why in plan.say and "skipped" in plan.say
        assert "apt-get install --no-install-recommends chromium" in plan.say


def test_apt_update_runs_only_where_the_first_install_failed():
    plan = browser.decide(None, root=True, apt=True)
    ran: list[str] = []

    def run_with(failing: set[str]):
        def run(step: tuple[str, ...]) -> int:
            ran.append(step[1])
            return 100 if step[1] in failing else 0
        return run

    # When the first install works, Then apt-get update never runs
    assert browser.attempt(plan.tries, run_with(set())) is True
    assert ran == ["install"]
    # When the update fails, Then the install is not tried a second time
    ran.clear()
    assert browser.attempt(plan.tries, run_with({"install", "update"})) is False
    assert ran == ["install", "update"]


def test_the_script_never_fails_make_test(tmp_path, capsys, monkeypatch):
    # Given a machine where apt-get is there but fails every time (and no chromium)
    monkeypatch.setattr(browser, "find_browser", lambda: None)
    monkeypatch.setattr(browser.os, "geteuid", lambda: 0)
    monkeypatch.setattr(browser.shutil, "which", lambda name: "/usr/bin/" + name)
    log = tmp_path / "browser.log"
    monkeypatch.setattr(browser, "_run", lambda step, out: out.write("E: no network\n") or 100)
    # When the script runs, Then it exits 0, saying the test will be skipped, the log's tail shown
    assert browser.main([str(log)]) == 0
    out = capsys.readouterr()
    assert "Installing Debian's chromium" in out.out
    assert "E: no network" in out.err and "will be skipped" in out.err
