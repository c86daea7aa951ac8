"""Generation backends. They run in a worker thread, never on the event loop.

`generate(task, emit, cancelled)` streams text pieces through `emit` and returns the
Outcome; it stops early, with finish_reason "cancelled", once `cancelled` is set. A
prompt the model cannot take (longer than its context) is the request's fault: an Outcome
with error_kind "request", not an exception.
"""


from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from common.bodies import CONTEXT_LENGTH_EXCEEDED, ERROR_REQUEST, Outcome, Sampling, Task
from common.errors import ModelError
from worker.cpu_probe import extra_buffers_work
from worker.kv_state import PrefixReuse
from worker.logprobs import MeanLogprob, watch_llama
from worker.prefix_cache import PrefixStore
from worker.prompt import AnswerFilter, forced_call_schema, offer_tools, prompt_and_stops

log = logging.getLogger(__name__)

Emit = Callable[[str], None]


class Backend(Protocol):
    name: str
    model: str
    n_ctx: int  # the context window the model was loaded with, in tokens

    def generate(self, task: Task, emit: Emit, cancelled: threading.Event) -> Outcome: ...


_llama_log_callback = None  # kept referenced: llama.cpp holds a raw pointer to it


def _quiet_llama_cpp() -> None:
    """Send llama.cpp's own C-level log lines to our logger at debug, not straight to stderr."""
    global _llama_log_callback
    if _llama_log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    _llama_log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


@contextlib.contextmanager
def _extra_buffers(enabled: bool) -> Iterator[None]:
    """Load with llama.cpp's extra CPU weight buffers (AMX, repacking) on or off.

    Where they crash (worker/cpu_probe.py), they are turned off. Llama() has no argument
    for it, so its default-parameters function is swapped for the length of one load.
    """
    import llama_cpp.llama_cpp as lib
    if enabled:
        yield
        return
    log.debug("llama.cpp: extra weight buffers off (AMX CPU)")
    default = lib.llama_model_default_params

    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        lib.llama_model_default_params = default


def call_grammar(llm: Any, schema: dict[str, Any]) -> Any:
    """The LlamaGrammar of a JSON schema, or None (prompt only) where llama.cpp cannot take it.

    The schema comes from a client: one that refers outside itself is not followed (the
    converter would fetch the URL); the converter's own failures, of any type, mean no
    grammar; and llama.cpp parses a grammar only when a request's sampler is built, where
    one it rejects would crash: so it is parsed once here first, and freed."""
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf
    if not _self_contained(schema):
        log.warning("tool call not constrained: its schema refers to another document")
        return None
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except Exception as e:  # noqa: BLE001 - third-party code over a client's schema
        log.warning("tool call not constrained: its schema makes no grammar (%s)", e)
        return None
    probe = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode(), b"root")
    if not probe:
        log.warning("tool call not constrained: llama.cpp rejects the grammar of its schema")
        return None
    llama_cpp.llama_sampler_free(probe)
    return LlamaGrammar.from_string(gbnf, verbose=False)


def _self_contained(schema: Any) -> bool:
    """No "$ref" in the schema points outside it (only "#/..." refs)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
                return False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


# llama-cpp-python's own check, for prompts we cannot count (a GGUF chat template formats them)
_CONTEXT_ERROR = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def too_long(task: Task, prompt_tokens: int, n_ctx: int) -> Outcome:
    return Outcome(task.job, task.cand, error=f"prompt of {prompt_tokens} tokens does not fit "
                   f"the context window of {n_ctx} tokens", error_kind=ERROR_REQUEST,
                   error_code=CONTEXT_LENGTH_EXCEEDED)


class Collector:
    """Passes each piece on to `emit`, keeping the whole text and when the first one came."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.parts: list[str] = []
        self.first: float | None = None  # time.perf_counter() of the first piece

    def __call__(self, piece: str) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.parts.append(piece)
        self.emit(piece)

    def text(self) -> str:
        return "".join(self.parts)


def finished(task: Task, collected: Collector, finish: str, prompt_tokens: int,
             completion_tokens: int, start: float, logprob: float | None = None) -> Outcome:
    """The Outcome every backend returns: text, finish reason, usage, timings and, where
    asked, the mean token log-probability (worker/logprobs.py)."""
    elapsed = time.perf_counter() - start
    first = collected.first
    gen_s = elapsed - ((first - start) if first else 0.0)
    return Outcome(
        job=task.job, cand=task.cand, text=collected.text(), finish_reason=finish,
        usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
               "total_tokens": prompt_tokens + completion_tokens},
        timings={"total_s": round(elapsed, 4),
                 "ttft_s": round(first - start, 4) if first else None,
                 "tokens_per_s": (round(completion_tokens / gen_s, 2)
                                  if gen_s > 0 and completion_tokens else None)},
        logprob=logprob if task.sampling.logprobs else None,
    )


class LlamaCppBackend:
    """llama.cpp through llama-cpp-python: one model instance, one slot.

    llama.cpp asks an abort callback between graph nodes; ours answers "stop" once the
    current request's cancel event is set, so CANCEL also cuts a long prompt evaluation.
    Instances given one `prefix_store` reuse each other's evaluated prompts (kv_state.py);
    `prefix_cache` False starts every generation from an empty KV. The SWA cache is
    full-size: llama.cpp's batched prompt evaluation with the small one gives other text
    than the same prompt continued from a saved state, and the plan counts the full size.
    """

    name = "llama.cpp"

    def __init__(self, model_path: Path, n_ctx: int = 2048, n_threads: int | None = None,
                 n_gpu_layers: int = 0, tensor_split: list[float] | None = None,
                 prefix_store: PrefixStore | None = None, prefix_cache: bool = True):
        try:
            import llama_cpp
        except ImportError as e:
            raise ModelError("llama-cpp-python is not installed") from e
        _quiet_llama_cpp()
        try:
            with _extra_buffers(extra_buffers_work(Path(model_path))):
                self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx,
                                           n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                                           tensor_split=tensor_split, swa_full=True,
                                           verbose=False)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"cannot load model {model_path}: {e}") from e
        self.model = Path(model_path).stem
        self.n_ctx = self.llm.n_ctx()
        self.has_template = bool(self.llm.metadata.get("tokenizer.chat_template"))
        self.aborts = 0  # decodes llama.cpp stopped part-way because the request was cancelled
        self._cancelled: threading.Event | None = None  # the current request's
        # referenced as long as self.llm: llama.cpp keeps only the raw function pointer
        self._abort_callback = llama_cpp.ggml_abort_callback(self._should_abort)
        llama_cpp.llama_set_abort_callback(self.llm.ctx, self._abort_callback, ctypes.c_void_p(0))
        store = (prefix_store or PrefixStore()) if prefix_cache else None
        self.prefix = PrefixReuse(self.llm, store, self._stopping)

    def _stopping(self) -> bool:
        return self._cancelled is not None and self._cancelled.is_set()

    def _should_abort(self, _data: ctypes.c_void_p) -> bool:
        """Called by llama.cpp's compute thread, many times per decode: keep it cheap."""
        cancelled = self._cancelled
        if cancelled is None or not cancelled.is_set():
            return False
        self.aborts += 1
        return True

    def generate(self, task: Task, emit: Emit, cancelled: threading.Event) -> Outcome:
        start = time.perf_counter()
        task = replace(task, sampling=offer_tools(task.sampling))
        prompt_tokens = self._prompt_tokens(task)
        if prompt_tokens >= self.n_ctx:
            return too_long(task, prompt_tokens, self.n_ctx)
        collect = Collector(emit)
        meter = MeanLogprob()
        self._cancelled = cancelled
        try:
            with watch_llama(self.llm, meter if task.sampling.logprobs else None):
                finish = self._run(task, collect, cancelled)
        except ValueError as e:  # llama-cpp-python's context check, for templated prompts
            if (m := _CONTEXT_ERROR.search(str(e))) is None:
                raise
            return too_long(task, int(m[1]), int(m[2]))
        except RuntimeError:
            if not cancelled.is_set():
                raise
            self.llm.reset()  # llama.cpp aborted a decode: start the next prompt afresh
            finish = "cancelled"
        finally:
            self._cancelled = None
        text = collect.text()
        completion = len(self.llm.tokenize(text.encode(), add_bos=False)) if text else 0
        return finished(task, collect, finish, prompt_tokens, completion, start, meter.mean())

    def _run(self, task: Task, emit: Emit, cancelled: threading.Event) -> str:
        """Stream the pieces to `emit`; the finish reason."""
        finish = "length"
        # llama-cpp-python cuts the stop strings itself: only the leading label is ours to cut
        answer = AnswerFilter((), strip_labels=self._uses_transcript(task))
        for piece, reason in self._stream(task):
            if piece and (piece := answer.feed(piece)):
                emit(piece)
            if reason:
                finish = reason
            if cancelled.is_set():
                return "cancelled"
        if rest := answer.finish():
            emit(rest)
        return finish

    def _uses_transcript(self, task: Task) -> bool:
        return task.sampling.messages is not None and not self.has_template

    def _prompt_tokens(self, task: Task) -> int:
        """The prompt's length as llama-cpp-python counts it (with BOS)."""
        if task.sampling.messages is not None and self.has_template:
            return 0  # the chat handler formats the prompt; llama-cpp-python does not expose it
        prompt = prompt_and_stops(task.sampling)[0]
        return len(self.llm.tokenize(prompt.encode(), add_bos=True, special=True))

    def _grammar(self, sampling: Sampling) -> Any:
        """A llama.cpp grammar that only a valid call matches, where a call is forced."""
        schema = forced_call_schema(sampling)
        return None if schema is None else call_grammar(self.llm, schema)

    def _stream(self, task: Task) -> Iterator[tuple[str, str | None]]:
        s = task.sampling
        common = dict(max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                      seed=task.seed, stream=True, grammar=self._grammar(s))
        if s.messages is not None and self.has_template:
            stream = self.llm.create_chat_completion(messages=list(s.messages),
                                                     stop=list(s.stop) or None, **common)
            for chunk in stream:
                choice = chunk["choices"][0]
                yield choice["delta"].get("content") or "", choice.get("finish_reason")
            return
        prompt, stop = prompt_and_stops(task.sampling)
        for chunk in self.llm.create_completion(prompt, stop=stop or None, **common):
            choice = chunk["choices"][0]
            yield choice.get("text") or "", choice.get("finish_reason")
