"""scripts/install.py: what `make` shows while it installs (the pip run itself is what every
fresh `make test` does)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("install_script", ROOT / "scripts" / "install.py")
install = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install)


def test_the_cxx_build_percentage_is_read_from_make_and_ninja_lines():
    assert install.read_line("  [ 45%] Building CXX object vendor/llama.cpp/src/llama.cpp.o\n") \
        == (None, 45)
    assert install.read_line("  [12/48] Building C object ggml/src/ggml.c.o\n") == (None, 25)
    assert install.read_line("  [0/0] nothing\n") == (None, None)
    assert install.read_line("  some compiler warning: 45% of nothing\n") == (None, None)


def test_pip_phases_come_from_its_own_lines_not_the_build_environments():
    started = "  Building wheel for llama-cpp-python (pyproject.toml): started\n"
    assert install.read_line(started) == ("building llama-cpp-python (C++)", None)
    assert install.read_line("Collecting pyzmq>=25\n") == ("collecting packages", None)
    assert install.read_line("  Collecting setuptools>=77\n") == (None, None)  # build env
    assert install.read_line("Building editable for swarm-llm (pyproject.toml)\n")[0] \
        == "installing Swarm itself"


def test_without_a_terminal_progress_is_a_line_per_tenth(capsys):
    status = install.Status(tty=False)
    status.update("building llama-cpp-python (C++)", None)
    for pct in range(0, 101):
        status.update(None, pct)
    lines = capsys.readouterr().out.splitlines()
    shown = [line.split(")")[0] for line in lines if "%" in line]
    assert len(shown) == 11  # 0%, 10%, ... 100%: one line each, not 101
    assert "building llama-cpp-python (C++) 100%" in lines[-1]


def test_the_note_says_what_happens_to_llama_cpp_python(monkeypatch):
    assert "is installed already" in install.llama_note(2)  # this venv has it

    def missing(name):
        raise install.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(install.metadata, "version", missing)
    monkeypatch.setattr(install, "_cached_wheel", lambda: True)
    assert "reuses the wheel it built before" in install.llama_note(2)
    monkeypatch.setattr(install, "_cached_wheel", lambda: False)
    assert "about 8 minutes with the 2 cores" in install.llama_note(2)
    assert "about 2 minutes with the 16 cores" in install.llama_note(16)


def test_a_failing_pip_shows_the_log_tail_and_its_exit_status(tmp_path):
    log = tmp_path / "install.log"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "install.py"), str(log),
                          "--no-index", "surely-not-a-package-here"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "pip failed (exit" in out.stderr and str(log) in out.stderr
    assert "surely-not-a-package-here" in out.stderr  # pip's own words, from the log's tail
    assert log.read_text().strip()
