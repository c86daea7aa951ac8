"""Generation backends. They run in a worker thread, never on the event loop.

`generate(task, emit, cancelled)` streams text pieces through `emit` and returns the
Outcome; it stops early, with finish_reason "cancelled", once `cancelled` is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from common.bodies import Outcome, Task
from common.errors import ModelError
from worker.prompt import stops_for_chat, transcript

log = logging.getLogger(__name__)

Emit = Callable[[str], None]


class Backend(Protocol):
    name: str
    model: str

    def generate(self, task: Task, emit: Emit, cancelled: threading.Event) -> Outcome: ...


_llama_log_callback = None  # kept referenced: llama.cpp holds a raw pointer to it


def _quiet_llama_cpp() -> None:
    """Send llama.cpp's own C-level log lines to our logger at debug, not straight to stderr."""
    global _llama_log_callback
    if _llama_log_callback is not None:
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    _llama_log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


class LlamaCppBackend:
    """llama.cpp through llama-cpp-python: one model instance, one slot."""

    name = "llama.cpp"

    def __init__(self, model_path: Path, n_ctx: int = 2048, n_threads: int | None = None,
                 n_gpu_layers: int = 0):
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelError("llama-cpp-python is not installed") from e
        _quiet_llama_cpp()
        try:
            self.llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads,
                             n_gpu_layers=n_gpu_layers, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"cannot load model {model_path}: {e}") from e
        self.model = Path(model_path).stem
        self.has_template = bool(self.llm.metadata.get("tokenizer.chat_template"))

    def generate(self, task: Task, emit: Emit, cancelled: threading.Event) -> Outcome:
        start = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        finish = "length"
        for piece, reason in self._stream(task):
            if piece:
                if first is None:
                    first = time.perf_counter()
                parts.append(piece)
                emit(piece)
            if reason:
                finish = reason
            if cancelled.is_set():
                finish = "cancelled"
                break
        elapsed = time.perf_counter() - start
        text = "".join(parts)
        completion = len(self.llm.tokenize(text.encode(), add_bos=False)) if text else 0
        prompt_tokens = self._prompt_tokens(task)
        gen_s = elapsed - ((first - start) if first else 0.0)
        return Outcome(
            job=task.job, cand=task.cand, text=text, finish_reason=finish,
            usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                   "total_tokens": prompt_tokens + completion},
            timings={"total_s": round(elapsed, 4),
                     "ttft_s": round(first - start, 4) if first else None,
                     "tokens_per_s": round(completion / gen_s, 2) if gen_s > 0 and completion else None},
        )

    def _prompt(self, task: Task) -> tuple[str, list[str]]:
        s = task.sampling
        if s.prompt is not None:
            return s.prompt, list(s.stop)
        return transcript(s.messages or ()), stops_for_chat(s.stop)

    def _prompt_tokens(self, task: Task) -> int:
        if task.sampling.messages is not None and self.has_template:
            return 0  # the chat handler formats the prompt; llama-cpp-python does not expose it
        return len(self.llm.tokenize(self._prompt(task)[0].encode()))

    def _stream(self, task: Task) -> Iterator[tuple[str, str | None]]:
        s = task.sampling
        common = dict(max_tokens=s.max_tokens, temperature=s.temperature, seed=task.seed,
                      stream=True)
        if s.messages is not None and self.has_template:
            stream = self.llm.create_chat_completion(messages=list(s.messages),
                                                     stop=list(s.stop) or None, **common)
            for chunk in stream:
                choice = chunk["choices"][0]
                yield choice["delta"].get("content") or "", choice.get("finish_reason")
            return
        prompt, stop = self._prompt(task)
        for chunk in self.llm.create_completion(prompt, stop=stop or None, **common):
            choice = chunk["choices"][0]
            yield choice.get("text") or "", choice.get("finish_reason")
