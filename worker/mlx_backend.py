"""The MLX backend: mlx-lm's streaming generation on an MLX model directory (Apple Silicon).

mlx and mlx-lm are imported only when this backend is built, so a worker without them runs
llama.cpp as before. Sampling draws from its own PRNG key, made from the task's seed and
split once per token, never from mlx's process-wide random state: the slots of one node
generate side by side in threads, and the same seed still gives the same text. mlx-lm does
not cut stop strings: `AnswerFilter` does, and holds back a stop split over pieces.
CANCEL is seen between tokens, and between chunks of a long prompt's evaluation.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from common.bodies import ERROR_REQUEST, Outcome, Task
from common.errors import ModelError
from worker.backend import Collector, Emit, finished, too_long
from worker.logprobs import TokenLog
from worker.prompt import AnswerFilter, offer_tools, prompt_and_stops

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'swarm-llm[mlx]'"
DEFAULT_CONTEXT = 4096  # tokens, where neither the caller nor the model's config says
SEED_MODULUS = 2**32


def mlx_available() -> bool:
    """Whether mlx-lm and mlx are installed, found without importing them."""
    return all(importlib.util.find_spec(name) is not None for name in ("mlx_lm", "mlx"))


def _import_mlx() -> tuple[Any, Any]:
    """(mlx.core, mlx_lm), or ModelError with one sentence saying what to install."""
    try:
        import mlx.core as mx
        import mlx_lm
    except ImportError as e:
        if e.name in ("mlx_lm", "mlx"):
            raise ModelError(f"mlx-lm is not installed: {INSTALL_HINT}") from e
        raise ModelError(f"mlx-lm cannot start here ({e}): {INSTALL_HINT}") from e
    return mx, mlx_lm


class _Cancelled(Exception):
    """Raised from mlx-lm's prompt-progress callback to end a cancelled prompt evaluation."""


def _context(n_ctx: int | None, config: dict[str, Any]) -> int:
    """The context window: the smaller of the caller's and the model's own, where known."""
    limits = [n for n in (n_ctx, config.get("max_position_embeddings"))
              if isinstance(n, int) and not isinstance(n, bool) and n > 0]
    return min(limits) if limits else DEFAULT_CONTEXT


class MlxBackend:
    """One MLX model instance, one slot. `seed_base` is added to every task's seed."""

    name = "mlx"

    def __init__(self, path: Path | str, seed_base: int = 0, n_ctx: int | None = None):
        self.mx, self.mlx_lm = _import_mlx()
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ModelError(f"MLX model directory {path} does not exist")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not an MLX model directory: it has no config.json")
        try:
            self.llm, self.tokenizer, config = self.mlx_lm.load(str(path), return_config=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as e:
            raise ModelError(f"cannot load MLX model {path}: {e}") from e
        self.model = path.resolve().name
        self.n_ctx = _context(n_ctx, config)
        self.has_template = bool(self.tokenizer.has_chat_template)
        self.seed_base = seed_base
        log.info("mlx: loaded %s (context %d tokens, chat template: %s)", self.model,
                 self.n_ctx, "yes" if self.has_template else "no")

    def generate(self, task: Task, emit: Emit, cancelled: threading.Event) -> Outcome:
        start = time.perf_counter()
        task = replace(task, sampling=offer_tools(task.sampling))  # no grammar: prompt only
        try:
            tokens, stops = self._prompt(task)
        except ValueError as e:
            return Outcome(task.job, task.cand, error=str(e), error_kind=ERROR_REQUEST)
        if len(tokens) >= self.n_ctx:
            return too_long(task, len(tokens), self.n_ctx)
        collect = Collector(emit)
        answer = AnswerFilter(stops, strip_labels=self._uses_transcript(task))
        made = TokenLog()
        try:
            finish, completion = self._run(task, tokens, answer, collect, cancelled, made)
        except _Cancelled:
            finish, completion = "cancelled", 0
        logprob = made.meter(self.tokenizer.decode, stops).mean()
        return finished(task, collect, finish, len(tokens), completion, start, logprob)

    def _run(self, task: Task, tokens: list[int], answer: AnswerFilter, emit: Emit,
             cancelled: threading.Event, made: TokenLog) -> tuple[str, int]:
        """Stream the answer to `emit`, logging each token in `made` where its log-probability
        is asked (mlx-lm's own log-softmax of the raw logits); (finish reason, tokens generated)."""
        def check_cancel(_done: int, _total: int) -> None:
            if cancelled.is_set():
                raise _Cancelled

        s = task.sampling
        finish, completion = "length", 0
        stream = self.mlx_lm.stream_generate(
            self.llm, self.tokenizer, tokens, max_tokens=min(s.max_tokens, self.n_ctx - len(tokens)),
            sampler=self._sampler(s.temperature, s.top_p, task.seed),
            prompt_progress_callback=check_cancel)
        with contextlib.closing(stream):
            for step in stream:
                # mlx-lm's last step repeats the end-of-text token it counted: not part of the answer
                completion = step.generation_tokens - (step.finish_reason == "stop")
                if s.logprobs and step.finish_reason != "stop":
                    made.add(step.token, step.logprobs[step.token].item(), step.text)
                if piece := answer.feed(step.text):
                    emit(piece)
                if answer.stopped:
                    return "stop", completion
                if cancelled.is_set():
                    return "cancelled", completion
                finish = step.finish_reason or finish
        if rest := answer.finish():
            emit(rest)
        return finish, completion

    def _sampler(self, temperature: float, top_p: float, seed: int):
        """Greedy at temperature 0 (or top_p 0); otherwise categorical sampling on this
        request's own key, from the smallest set of tokens whose probability reaches top_p."""
        from mlx_lm.sample_utils import apply_top_p, make_sampler
        if temperature == 0 or top_p == 0:
            return make_sampler(temp=0.0)
        mx = self.mx
        key = mx.random.key((seed + self.seed_base) % SEED_MODULUS)
        scale = 1.0 / temperature

        def sample(logprobs):
            nonlocal key
            if top_p < 1.0:
                logprobs = apply_top_p(logprobs, top_p)
            key, draw = mx.random.split(key)
            return mx.random.categorical(logprobs * scale, key=draw)

        return sample

    def _uses_transcript(self, task: Task) -> bool:
        return task.sampling.messages is not None and not self.has_template

    def _prompt(self, task: Task) -> tuple[list[int], list[str]]:
        """The prompt's tokens and the stop strings; ValueError where none can be made."""
        s = task.sampling
        if s.messages is not None and self.has_template:
            tokens = self._chat_tokens(list(s.messages))
            stops = list(s.stop)
        else:
            text, stops = prompt_and_stops(s)
            tokens = list(self.tokenizer.encode(text))
        if not tokens:
            bos = self.tokenizer.bos_token_id
            if bos is None:
                raise ValueError("the prompt is empty and this model has no start token to begin from")
            tokens = [bos]
        return tokens, stops

    def _chat_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        from jinja2 import TemplateError  # mlx-lm's tokenizers render templates with jinja2
        try:
            return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        except TemplateError as e:
            raise ValueError(f"the model's chat template refused these messages: {e}") from e
