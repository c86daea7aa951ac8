"""The AMX probe: a decode that crashes in a child process turns llama.cpp's extra weight
buffers off, a clean one keeps them, and the verdict is kept once per CPU and model."""

from __future__ import annotations

import pytest

from worker import cpu_probe

pytestmark = pytest.mark.timeout(60)

CRASH = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"


@pytest.fixture
def amx_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("SWARM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_probe, "_cpu_lines", lambda: "model name: X\nflags: avx2 amx_tile")
    return tmp_path


def test_a_child_that_dies_of_a_signal_turns_the_buffers_off_and_is_remembered(amx_cpu, monkeypatch):
    monkeypatch.setattr(cpu_probe, "_PROBE", CRASH)
    assert cpu_probe.extra_buffers_work(amx_cpu / "m.gguf") is False
    (verdict,) = amx_cpu.glob("extra-buffers-*")
    assert verdict.read_text() == "crash"
    monkeypatch.setattr(cpu_probe, "_PROBE", "raise SystemExit(0)")
    assert cpu_probe.extra_buffers_work(amx_cpu / "m.gguf") is False  # remembered, not re-probed


def test_a_clean_decode_keeps_the_buffers(amx_cpu, monkeypatch):
    monkeypatch.setattr(cpu_probe, "_PROBE", "raise SystemExit(0)")
    assert cpu_probe.extra_buffers_work(amx_cpu / "m.gguf") is True


def test_without_amx_nothing_is_probed(monkeypatch, tmp_path):
    monkeypatch.setenv("SWARM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_probe, "_cpu_lines", lambda: "flags: avx2")
    monkeypatch.setattr(cpu_probe, "_PROBE", CRASH)
    assert cpu_probe.extra_buffers_work(tmp_path / "m.gguf") is True
    assert not list(tmp_path.iterdir())


@pytest.mark.model
def test_the_real_probe_agrees_with_the_real_model(model_path, tmp_path, monkeypatch):
    """On this machine, whatever its CPU: the verdict lets the model load and answer."""
    monkeypatch.setenv("SWARM_CACHE_DIR", str(tmp_path))
    from worker.backend import LlamaCppBackend
    backend = LlamaCppBackend(model_path, n_ctx=256)
    assert backend.llm.create_completion("Hello", max_tokens=2)["choices"]
