"""A candidate's mean token log-probability: the weight of its vote under `confidence`.

What is counted, by every backend alike: each token the model generated for the candidate,
up to and including the one that completed a stop string (its text is cut, but the model
made it); not the end-of-generation token that ended the answer. Each token's value is
log p(token | prompt and the tokens before it), natural log, under the model's raw
next-token distribution: temperature 1, before temperature, top-p, penalties or a grammar
shaped what was sampled. The mean is None when no token was counted.

llama.cpp is loaded without `logits_all` (a 262k-token vocabulary makes a logits matrix over
the context cost GBs): `watch_llama` reads the one row of logits llama.cpp keeps, that of the
position just sampled, as each token comes out of `Llama.generate`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from common.bodies import MIN_LOGPROB

log = logging.getLogger(__name__)


class MeanLogprob:
    """Sums token log-probabilities; `mean()` is what an Outcome reports."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self._buffer: np.ndarray | None = None  # scratch for the softmax, one per vocabulary

    def add(self, logprob: float) -> None:
        self.total += logprob
        self.count += 1

    def add_logits(self, logits: np.ndarray, token: int) -> None:
        """Count `token`, sampled from the raw scores `logits` (one per vocabulary entry)."""
        if self._buffer is None or self._buffer.shape != logits.shape:
            self._buffer = np.empty(logits.shape, dtype=np.float32)
        self.add(token_logprob(logits, token, self._buffer))

    def mean(self) -> float | None:
        """The mean over the counted tokens, within the wire's [MIN_LOGPROB, 0]; None if
        none was counted, or if the model's scores were not numbers (NaN)."""
        if not self.count:
            return None
        mean = self.total / self.count
        if math.isnan(mean):
            log.warning("logprob not reported: the model's scores were not numbers")
            return None
        return min(0.0, max(MIN_LOGPROB, mean))


class TokenLog:
    """An answer's tokens as they stream, each with its log-probability and the text it
    released, for a backend whose text may lag its tokens: mlx-lm's streaming detokenizer
    holds a split character back, and a SentencePiece one a whole word. A stop string met in
    the text is then credited to the token that completed it, not to the one that released it."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.parts: list[str] = []

    def add(self, token: int, logprob: float, text: str) -> None:
        self.tokens.append(token)
        self.logprobs.append(logprob)
        self.parts.append(text)

    def meter(self, decode: Callable[[list[int]], str], stops: Sequence[str] = ()) -> MeanLogprob:
        """The tokens up to the one that completed the first stop string met (all if none),
        counted; `decode` is the tokenizer's."""
        meter = MeanLogprob()
        for logprob in self.logprobs[:self._through_stop(decode, stops)]:
            meter.add(logprob)
        return meter

    def _through_stop(self, decode: Callable[[list[int]], str], stops: Sequence[str]) -> int:
        text = "".join(self.parts)
        ends = [text.index(stop) + len(stop) for stop in stops if stop in text]
        made = len(self.tokens)
        if ends:
            end = min(ends)
            while made > 1 and len(decode(self.tokens[:made - 1])) >= end:
                made -= 1
        return made


def token_logprob(logits: np.ndarray, token: int, buffer: np.ndarray | None = None) -> float:
    """log softmax(logits)[token], numerically stable: the maximum is taken out before exp,
    and the exponentials are summed in float64. `buffer` (the shape of `logits`) saves an
    allocation per token."""
    top = float(logits.max())
    if not math.isfinite(top):
        return float("nan") if math.isnan(top) else MIN_LOGPROB
    scratch = np.subtract(logits, top, out=buffer, dtype=np.float32)
    np.exp(scratch, out=scratch)
    return float(logits[token]) - top - math.log(float(scratch.sum(dtype=np.float64)))


@contextlib.contextmanager
def watch_llama(llm: Any, meter: MeanLogprob | None) -> Iterator[None]:
    """While inside, every token `llm` (a llama_cpp.Llama) generates is counted in `meter`;
    None counts nothing and costs nothing.

    `Llama.generate` is shadowed on this instance for the length of one request (the chat
    handlers and create_completion all draw their tokens from it); a token is read the
    moment it is sampled, before the next decode overwrites the logits it came from.
    """
    if meter is None:
        yield
        return
    import llama_cpp
    generate = llm.generate
    vocab, n_vocab = llm._model.vocab, llm.n_vocab()

    def metered(*args: Any, **kwargs: Any) -> Iterator[int]:
        # create_completion iterates; it never send()s a token back into the generator
        with contextlib.closing(generate(*args, **kwargs)) as tokens:
            for token in tokens:
                if not llama_cpp.llama_vocab_is_eog(vocab, token):
                    logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
                    meter.add_logits(np.ctypeslib.as_array(logits, shape=(n_vocab,)), token)
                yield token

    llm.generate = metered
    try:
        yield
    finally:
        del llm.generate  # the class's own method again
