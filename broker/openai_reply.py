"""A job's FINAL body as OpenAI replies: pure functions from Swarm's maps to OpenAI's.

The FINAL of a job (broker/verdicts.py result_map or error_map) holds everything: the
winner, each candidate and the votes. `completion` builds the non-streaming reply,
`chunk` one streamed chunk, `job_error` the OpenAI error a failed job is, and
`x_swarm` / `swarm_headers` the vote summary every reply carries.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from broker import verdicts as V
from broker.openai_request import ApiError, ApiRequest
from common.bodies import CONTEXT_LENGTH_EXCEEDED



def reply_id(api: ApiRequest, job: str) -> str:
    return f"{'chatcmpl' if api.chat else 'cmpl'}-{job}"


def choices_of(api: ApiRequest, final: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidate maps returned as choices: the winner, then the next best by vote."""
    winner = final["winner"]["cand"]
    votes = final.get("votes", {})
    ok = [c for c in final["candidates"] if c.get("ok")]
    ranked = sorted(ok, key=lambda c: (c["cand"] != winner, -votes.get(str(c["cand"]), 0.0),
                                       c["cand"]))
    return ranked[:api.n]


def finish_reason(cand: dict[str, Any]) -> str:
    if cand.get("tool_calls"):
        return "tool_calls"
    return "length" if cand.get("finish_reason") == "length" else "stop"


def tool_calls(job: str, cand: dict[str, Any]) -> list[dict[str, Any]]:
    """A candidate's calls in OpenAI's shape, with ids unique within the reply."""
    return [{"id": f"call_{job}_{cand['cand']}_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}}
            for i, c in enumerate(cand.get("tool_calls") or ())]


def message(job: str, cand: dict[str, Any]) -> dict[str, Any]:
    calls = tool_calls(job, cand)
    if calls:  # a call is never left in the content as text
        return {"role": "assistant", "content": None, "tool_calls": calls}
    return {"role": "assistant", "content": cand.get("text", "")}


def usage(chosen: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, int]:
    """What the returned choices cost; the whole swarm's tokens are in x_swarm."""
    prompt = final.get("usage", {}).get("prompt_tokens", 0)
    completion = sum(c.get("tokens") or 0 for c in chosen)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def completion(api: ApiRequest, final: dict[str, Any], created: int) -> dict[str, Any]:
    """The whole non-streaming reply."""
    job = final["job"]
    chosen = choices_of(api, final)
    if api.chat:
        choices = [{"index": i, "message": message(job, c), "finish_reason": finish_reason(c),
                    "logprobs": None} for i, c in enumerate(chosen)]
    else:
        choices = [{"index": i, "text": c.get("text", ""), "finish_reason": finish_reason(c),
                    "logprobs": None} for i, c in enumerate(chosen)]
    return {"id": reply_id(api, job), "object": "chat.completion" if api.chat else
            "text_completion", "created": created, "model": api.model, "choices": choices,
            "usage": usage(chosen, final), "system_fingerprint": None, "x_swarm": x_swarm(final)}


def chunk(api: ApiRequest, rid: str, created: int, choices: list[dict[str, Any]],
          **extra: Any) -> dict[str, Any]:
    """One streamed chunk (`rid`: the reply's id, the same in every chunk). A chat choice
    carries a `delta`, a completion choice `text`."""
    return {"id": rid, "object": "chat.completion.chunk" if api.chat
            else "text_completion", "created": created, "model": api.model,
            "choices": choices, **extra}


def delta_choice(api: ApiRequest, index: int, text: str | None = None,
                 finish: str | None = None, **delta: Any) -> dict[str, Any]:
    if api.chat:
        if text:
            delta["content"] = text
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}


def call_deltas(job: str, cand: dict[str, Any]) -> list[dict[str, Any]]:
    """A candidate's calls as streamed deltas: each call's head, then its arguments."""
    out = []
    for i, call in enumerate(tool_calls(job, cand)):
        fn = call["function"]
        out.append({"index": i, "id": call["id"], "type": "function",
                    "function": {"name": fn["name"], "arguments": ""}})
        out.append({"index": i, "function": {"arguments": fn["arguments"]}})
    return out


VOTE_KEYS = ("answer", "group", "score", "agreed", "logprob")  # how each candidate voted


def x_swarm(final: dict[str, Any]) -> dict[str, Any]:
    """How the vote went: what counted and why the winner won, then each candidate's answer,
    group, score, who agreed with it, its peer, time and fate."""
    votes = final.get("votes", {})
    winner = final.get("winner") or {}
    return {
        "job": final.get("job"),
        "strategy": final.get("strategy"),
        "vote": final.get("vote"),
        "winner": {"cand": winner.get("cand"), "peer": winner.get("peer")} if winner else None,
        "candidates": [_explained(c, votes) for c in final.get("candidates", ())],
        "usage": final.get("usage"),
        "error": final.get("error"),
    }


def _explained(cand: dict[str, Any], votes: dict[str, Any]) -> dict[str, Any]:
    out = {"cand": cand["cand"], "peer": cand.get("peer"), "ok": cand.get("ok"),
           **{k: cand.get(k) for k in VOTE_KEYS},
           "latency_s": cand.get("latency_s"), "tokens": cand.get("tokens"),
           "error": cand.get("error")}
    if out["score"] is None:  # a FINAL before issue 8 has the scores in `votes` only
        out["score"] = votes.get(str(cand["cand"]))
    return out


def swarm_headers(final: dict[str, Any]) -> dict[str, str]:
    """The vote's summary as response headers (peer names percent-encoded: headers are ASCII)."""
    cands = final.get("candidates", ())
    ok = sum(1 for c in cands if c.get("ok"))
    out = {"X-Swarm-Job": str(final.get("job", "")),
           "X-Swarm-Strategy": str(final.get("strategy", "")),
           "X-Swarm-Candidates": f"{ok}/{len(cands)} ok"}
    vote = final.get("vote")
    if isinstance(vote, dict) and vote.get("method"):
        out["X-Swarm-Method"] = _ascii(vote["method"])
    winner = final.get("winner")
    if winner:
        out["X-Swarm-Winner"] = _ascii(winner.get("peer") or "")
        score = final.get("votes", {}).get(str(winner.get("cand")))
        if score is not None:
            out["X-Swarm-Score"] = f"{score:.4f}"
    return out


def _ascii(value: Any) -> str:
    return urllib.parse.quote(str(value), safe="~@:+")


def job_error(final: dict[str, Any]) -> ApiError:
    """The OpenAI error for a job that ended without an answer."""
    text = str(final.get("error") or "the swarm gave no answer")
    cands = final.get("candidates") or []
    if final.get("error_code") == CONTEXT_LENGTH_EXCEEDED:  # every failed candidate says so
        first = next((c for c in cands if c.get("error_code") == CONTEXT_LENGTH_EXCEEDED), {})
        return ApiError(400, "the prompt is longer than every worker's context window: "
                        f"{first.get('error') or text}", "messages", CONTEXT_LENGTH_EXCEEDED)
    if any(c.get("error") == V.DEADLINE for c in cands):
        return ApiError(504, f"the deadline passed before any candidate answered: {text}",
                        code="deadline_exceeded", kind="timeout_error")
    if text.startswith(V.NO_MODEL):
        return ApiError(404, text, "model", "model_not_found")
    if text.startswith(V.NO_WORKER):
        return ApiError(503, text, code="no_live_worker", kind="service_unavailable")
    if text.startswith(V.BUSY):
        return ApiError(503, text, code="busy", kind="service_unavailable")
    if text.startswith(V.SHUTTING_DOWN):
        return ApiError(503, text, code="shutting_down", kind="service_unavailable")
    if text.startswith(V.BAD_REQUEST):
        return ApiError(400, text)
    return ApiError(502, text, code="candidates_failed", kind="upstream_error")
