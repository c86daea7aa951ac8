"""The MLX backend on a real tiny MLX model built here: real mlx-lm load and generation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from dataclasses import replace

import pytest

try:
    import mlx.core  # noqa: F401
    import mlx_lm  # noqa: F401
except ImportError as e:  # the test extra installs mlx[cpu] on Linux and mlx-lm on Linux and macOS
    pytest.skip(f"mlx cannot be imported here ({e}); install the test extra: "
                "pip install -e '.[test]'", allow_module_level=True)

from client.client import SwarmClient
from common.bodies import CONTEXT_LENGTH_EXCEEDED, ERROR_REQUEST, GenerateRequest, Sampling, Task
from common.errors import ModelError
from tests.conftest import run
from tests.mlx_tiny import CHAT_TEMPLATE, CONTEXT, build_tiny_model
from tests.wire import running_broker
from worker.mlx_backend import MlxBackend, mlx_available
from worker.node import WorkerNode, node_profile
from worker.prompt import offer_tools, transcript
from worker.session import SessionConfig

PROMPT = "The capital of France is"
HB = 0.2


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("mlx") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    return MlxBackend(tiny_dir)


@pytest.fixture(scope="session")
def templated(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlx") / "tiny-chat"
    return MlxBackend(build_tiny_model(path, seed=0, chat_template=CHAT_TEMPLATE))


def generate(backend, sampling: Sampling, seed: int = 1, cancel_after: int | None = None):
    """(outcome, pieces); with `cancel_after`, CANCEL comes as that many pieces are out."""
    cancelled = threading.Event()
    pieces: list[str] = []

    def emit(piece: str) -> None:
        pieces.append(piece)
        if cancel_after is not None and len(pieces) >= cancel_after:
            cancelled.set()

    outcome = backend.generate(Task("j1", 0, seed, sampling), emit, cancelled)
    return outcome, pieces


def test_the_backend_names_itself_after_the_directory(tiny):
    assert tiny.name == "mlx" and tiny.model == "tiny-llama"
    assert tiny.n_ctx == CONTEXT and not tiny.has_template


def test_pieces_stream_and_join_to_the_text_with_usage_and_timings(tiny):
    outcome, pieces = generate(tiny, Sampling(prompt=PROMPT, max_tokens=12, temperature=0))
    assert outcome.error is None and outcome.finish_reason == "length"
    assert len(pieces) > 1 and all(pieces) and "".join(pieces) == outcome.text
    prompt_tokens = len(tiny.tokenizer.encode(PROMPT))
    assert outcome.usage == {"prompt_tokens": prompt_tokens, "completion_tokens": 12,
                             "total_tokens": prompt_tokens + 12}
    assert set(outcome.timings) == {"total_s", "ttft_s", "tokens_per_s"}
    assert outcome.timings["total_s"] >= outcome.timings["ttft_s"] > 0


def test_max_tokens_ends_by_length(tiny):
    outcome, _ = generate(tiny, Sampling(prompt=PROMPT, max_tokens=3, temperature=1.0))
    assert outcome.finish_reason == "length" and outcome.usage["completion_tokens"] == 3


def test_the_same_seed_gives_the_same_text_and_another_seed_another(tiny):
    sampling = Sampling(prompt=PROMPT, max_tokens=16, temperature=1.0)
    first, again, other = (generate(tiny, sampling, seed)[0].text for seed in (7, 7, 8))
    assert first and first == again
    assert other != first


def test_slots_side_by_side_keep_their_seeds(tiny_dir, tiny):
    # Given the text one instance writes alone for seed 5
    sampling = Sampling(prompt=PROMPT, max_tokens=24, temperature=1.0)
    alone = generate(tiny, sampling, seed=5)[0].text
    # When two instances of one node generate at once, from seeds 5 and 6, each waiting
    # after its first piece until the other has begun too
    both_started = threading.Barrier(2, timeout=30)
    texts: dict[int, str] = {}

    def slot(backend, seed: int) -> None:
        pieces: list[str] = []

        def emit(piece: str) -> None:
            if not pieces:
                both_started.wait()
            pieces.append(piece)

        texts[seed] = backend.generate(Task("j1", seed, seed, sampling), emit,
                                       threading.Event()).text

    threads = [threading.Thread(target=slot, args=args)
               for args in ((tiny, 5), (MlxBackend(tiny_dir), 6))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Then seed 5 still gives its own text: no slot draws from another's random state
    assert texts[5] == alone and texts[6] != alone


def test_a_stop_string_cuts_the_text_even_split_over_pieces(tiny):
    sampling = Sampling(prompt=PROMPT, max_tokens=16, temperature=1.0)
    full, pieces = generate(tiny, sampling, seed=3)
    assert len(pieces) >= 3
    # a stop made of the last character of one piece and the first of the next
    stop = pieces[1][-1] + pieces[2][0]
    outcome, cut = generate(tiny, Sampling(prompt=PROMPT, max_tokens=16, temperature=1.0,
                                           stop=(stop,)), seed=3)
    assert outcome.finish_reason == "stop"
    assert outcome.text == full.text[:full.text.index(stop)]
    assert stop not in outcome.text and "".join(cut) == outcome.text


def test_cancel_mid_stream_ends_the_generation(tiny):
    outcome, pieces = generate(tiny, Sampling(prompt=PROMPT, max_tokens=64, temperature=1.0),
                               cancel_after=3)
    assert outcome.error is None and outcome.finish_reason == "cancelled"
    assert len(pieces) == 3 and "".join(pieces) == outcome.text
    assert outcome.usage["completion_tokens"] < 64


def test_cancel_before_the_prompt_is_evaluated_gives_no_text(tiny):
    cancelled = threading.Event()
    cancelled.set()
    pieces: list[str] = []
    outcome = tiny.generate(Task("j1", 0, 1, Sampling(prompt=PROMPT, max_tokens=8)),
                            pieces.append, cancelled)
    assert outcome.finish_reason == "cancelled" and outcome.text == "" and not pieces


def test_chat_without_a_template_uses_the_plain_transcript(tiny):
    chat = ({"role": "user", "content": "Name three colours."},)
    outcome, pieces = generate(tiny, Sampling(messages=chat, max_tokens=8, temperature=1.0))
    assert outcome.error is None and "".join(pieces) == outcome.text
    assert outcome.usage["prompt_tokens"] == len(tiny.tokenizer.encode(transcript(chat)))


def test_chat_with_a_template_uses_the_tokenizers_template(templated):
    chat = ({"role": "user", "content": "Name three colours."},)
    outcome, pieces = generate(templated, Sampling(messages=chat, max_tokens=8, temperature=1.0))
    assert outcome.error is None and outcome.finish_reason == "length"
    expected = templated.tokenizer.apply_chat_template(list(chat), add_generation_prompt=True)
    assert outcome.usage["prompt_tokens"] == len(expected)
    assert "".join(pieces) == outcome.text


def test_a_prompt_longer_than_the_context_is_the_requests_fault(tiny):
    outcome, pieces = generate(tiny, Sampling(prompt="word " * 300, max_tokens=8))
    assert outcome.error_kind == ERROR_REQUEST and not pieces
    assert outcome.error.endswith(f"does not fit the context window of {CONTEXT} tokens")
    assert outcome.error_code == CONTEXT_LENGTH_EXCEEDED


def test_a_tiny_top_p_leaves_only_the_likeliest_token(tiny):
    hot = Sampling(prompt=PROMPT, max_tokens=12, temperature=1.0)
    greedy = generate(tiny, Sampling(prompt=PROMPT, max_tokens=12, temperature=0))[0].text
    assert generate(tiny, replace(hot, top_p=0.01), seed=3)[0].text == greedy
    assert generate(tiny, replace(hot, top_p=0.0), seed=3)[0].text == greedy
    assert generate(tiny, hot, seed=3)[0].text != greedy


def test_tools_are_offered_in_the_prompt_unless_tool_choice_is_none(tiny):
    tool = {"type": "function", "function": {"name": "get_time"}}
    chat = [{"role": "user", "content": "What time is it?"}]
    offered = Sampling.from_map({"messages": chat, "tools": [tool], "max_tokens": 4})
    outcome, _ = generate(tiny, offered)
    expected = transcript(offer_tools(offered).messages)
    assert expected.startswith("System: You can use these tools:")
    # the offer is in the prompt: too long for the tiny model's 256 tokens, as counted
    assert outcome.error_code == CONTEXT_LENGTH_EXCEEDED
    assert outcome.error.startswith(f"prompt of {len(tiny.tokenizer.encode(expected))} tokens")
    none = replace(offered, tool_choice="none")
    outcome, _ = generate(tiny, none)
    assert outcome.usage["prompt_tokens"] == len(tiny.tokenizer.encode(transcript(chat)))


def test_a_prompt_that_fits_but_leaves_little_room_ends_by_length(tiny):
    prompt = "Paris " * 50
    room = CONTEXT - len(tiny.tokenizer.encode(prompt))
    assert 0 < room < 64
    outcome, _ = generate(tiny, Sampling(prompt=prompt, max_tokens=200, temperature=0))
    assert outcome.error is None and outcome.finish_reason == "length"
    assert outcome.usage["completion_tokens"] == room


def test_an_empty_prompt_starts_from_the_start_token(tiny):
    outcome, pieces = generate(tiny, Sampling(prompt="", max_tokens=4, temperature=1.0))
    assert outcome.error is None and outcome.usage["prompt_tokens"] == 1
    assert "".join(pieces) == outcome.text


def test_a_missing_or_wrong_directory_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        MlxBackend(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="has no config.json"):
        MlxBackend(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelError, match="cannot load MLX model"):
        MlxBackend(tmp_path)


def test_without_mlx_lm_the_error_says_what_to_install(monkeypatch, tiny_dir):
    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # as if not installed
    with pytest.raises(ModelError, match=r"^mlx-lm is not installed: pip install 'swarm-llm\[mlx\]'$"):
        MlxBackend(tiny_dir)


def test_mlx_available_finds_mlx_lm_without_importing_it():
    code = ("import sys; from worker.mlx_backend import mlx_available; "
            "print(mlx_available(), 'mlx_lm' in sys.modules, 'mlx.core' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "False", "False"], out.stderr
    assert mlx_available()


def test_a_worker_node_serves_a_job_with_the_mlx_backend_through_the_broker(ctx, tiny, tiny_dir):
    """The real broker, a real WorkerNode with the MLX backend, and a real client, on loopback."""
    async def body():
        async with running_broker(ctx, heartbeat_s=HB, timeout_s=60.0) as broker:
            profile = node_profile("mac-1", tiny, 1, True, "127.0.0.1")
            config = SessionConfig(broker.endpoint, heartbeat_s=HB, reconnect_min_s=0.05,
                                   reconnect_max_s=0.2)
            node = asyncio.create_task(WorkerNode(config, profile, [MlxBackend(tiny_dir)], ctx).run())
            try:
                client = SwarmClient(broker.endpoint, ctx)
                while not any(p["live"] for p in (await client.status())["peers"]):
                    await asyncio.sleep(0.05)
                request = GenerateRequest(Sampling(prompt=PROMPT, max_tokens=8, temperature=1.0),
                                          candidates=2, seed=11, greedy=False)
                return await client.generate(request, 60.0), await client.status()
            finally:
                node.cancel()
                await asyncio.gather(node, return_exceptions=True)

    result, status = run(body(), 90.0)
    cands = result["candidates"]
    assert len(cands) == 2 and all(c["ok"] and c["peer"] == "mac-1" for c in cands)
    # each candidate is what this model writes for its seed: the same text, token for token
    for c in cands:
        assert c["text"] == generate(tiny, Sampling(prompt=PROMPT, max_tokens=8, temperature=1.0),
                                     seed=c["seed"])[0].text
    peer = next(p for p in status["peers"] if p["name"] == "mac-1")
    assert peer["profile"]["backend"] == "mlx" and peer["profile"]["model"] == "tiny-llama"
    assert peer["profile"]["n_ctx"] == CONTEXT  # the context the slot's model really has
