"""Adaptive per-peer timeouts (issue 9, item 2) as pure logic: broker/adaptive.py, the
order of precedence in broker/policy.py, and what the dispatcher arms with it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.adaptive import (DEFAULT, HINT, LEARNED, OVERRIDE, Learning, Timeout, decode_rate,
                             quantile)
from broker.jobs import RUNNING
from broker.metrics import PeerMetrics
from broker.policy import TimeoutPolicy
from tests.test_generate_logic import Swarm, tasks

pytestmark = pytest.mark.timeout(30)

LEARNING = Learning(floor_s=5.0, cap_s=600.0)


def history(ttft_s: float, tokens_per_s: float, answers: int = 10, tokens: int = 100) -> PeerMetrics:
    """A peer's metrics after `answers` successes at this pace."""
    m = PeerMetrics()
    for _ in range(answers):
        m.started()
        m.succeeded(ttft_s + (tokens - 1) / tokens_per_s, ttft_s, tokens)
    return m


def needs_s(ttft_s: float, tokens_per_s: float, max_tokens: int) -> float:
    """What an answer of max_tokens takes at that pace."""
    return ttft_s + (max_tokens - 1) / tokens_per_s


PHONE = (2.0, 3.0)      # 2 s to the first token, then 3 tokens/s
DESKTOP = (0.1, 60.0)   # 0.1 s, then 60 tokens/s


def policy(**kw) -> TimeoutPolicy:
    return TimeoutPolicy(default_s=60.0, learning=LEARNING, **kw)


# -- the two stories ---------------------------------------------------------------------

def test_a_slow_phone_is_not_cut_off_at_a_desktops_pace():
    # Given a phone and a desktop, each with its own history
    phone, desktop = history(*PHONE), history(*DESKTOP)
    # When each is given a 256-token candidate
    t_phone = policy().for_peer("phone", None, 256, phone)
    t_desktop = policy().for_peer("desktop", None, 256, desktop)
    # Then the phone gets time for its whole answer (beyond the 60 s default, and far
    # beyond what the desktop needs), learned from its own history
    assert t_phone.source == LEARNED and t_desktop.source == LEARNED
    assert t_phone.s > needs_s(*PHONE, 256) > 60.0
    assert t_phone.s > 10 * t_desktop.s


def test_a_stuck_desktop_is_not_waited_for_at_a_phones_pace():
    # Given a desktop that has always answered at 60 tokens/s, beside a phone
    desktop, phone = history(*DESKTOP), history(*PHONE)
    # When it takes a 256-token candidate and hangs
    t = policy().for_peer("desktop", None, 256, desktop)
    # Then its candidate is given up after a few times what it ever needed: not the
    # broker's 60 s default, nor anything near what the phone is given
    assert t.source == LEARNED
    assert needs_s(*DESKTOP, 256) < t.s < 15.0
    assert t.s < policy().for_peer("phone", None, 256, phone).s / 10


def test_the_learned_timeout_scales_with_the_jobs_max_tokens():
    phone = history(*PHONE)
    short, long = (policy().for_peer("phone", None, n, phone).s for n in (16, 128))
    assert needs_s(*PHONE, 16) < short < long and long > needs_s(*PHONE, 128)


# -- bounds and precedence ---------------------------------------------------------------

def test_a_fast_peer_on_a_short_job_gets_the_floor():
    t = policy().for_peer("desktop", None, 1, history(0.01, 5000.0))
    assert t == Timeout(5.0, LEARNED)


def test_a_slow_peer_on_a_long_job_gets_the_cap():
    t = policy().for_peer("phone", None, 100_000, history(*PHONE))
    assert t == Timeout(600.0, LEARNED)


def test_too_few_samples_give_the_default():
    # Given a peer with two successes (the minimum is three), and one with none at all
    for m in (history(*DESKTOP, answers=2), PeerMetrics(), None):
        # Then it gets the broker's default, said to be the default
        assert policy().for_peer("new", None, 256, m) == Timeout(60.0, DEFAULT)


def test_answers_of_one_token_teach_no_rate():
    # Given three answers of a single token each: a first token, no decode rate
    m = history(*DESKTOP, answers=3, tokens=1)
    assert len(m.ttfts) == 3 and len(m.rates) == 0
    # Then nothing is learned yet
    assert policy().for_peer("p", None, 256, m).source == DEFAULT


def test_an_override_and_a_worker_hint_win_over_what_is_learned():
    learned = history(*DESKTOP)
    p = policy(overrides={"desktop": 300.0})
    # the override beats the hint and the history
    assert p.for_peer("desktop", 90.0, 256, learned) == Timeout(300.0, OVERRIDE)
    # the hint beats the history, and neither is clamped to the floor or the cap
    assert p.for_peer("other", 2.0, 256, learned) == Timeout(2.0, HINT)
    assert p.for_peer("other", 900.0, 256, learned) == Timeout(900.0, HINT)
    # without either, the history
    assert p.for_peer("other", None, 256, learned).source == LEARNED


def test_for_candidate_reads_the_peer_and_hint_from_the_slot():
    s = Swarm()
    s.add(b"a", timeout_s=7.0)
    s.add(b"b")
    slot_a, slot_b = s.registry.get(b"a"), s.registry.get(b"b")
    p = policy(overrides={"B": 11.0})
    assert p.for_candidate(slot_a, 256, None) == Timeout(7.0, HINT)
    assert p.for_candidate(slot_b, 256, None) == Timeout(11.0, OVERRIDE)


# -- absurd samples ------------------------------------------------------------------------

def test_absurd_samples_cannot_push_the_timeout_outside_floor_and_cap():
    # Given answers of 0 s, answers claiming a billion tokens, and ones of a day
    instant, boast, glacial = PeerMetrics(), PeerMetrics(), PeerMetrics()
    for _ in range(5):
        instant.succeeded(0.0, 0.0, 100)
        boast.succeeded(0.001, 0.0, 10**9)
        glacial.succeeded(86400.0, 86000.0, 2)
    t_instant, t_boast, t_glacial = (policy().for_peer("p", None, 256, m)
                                     for m in (instant, boast, glacial))
    # Then 0 s teaches no rate at all, and the rest stay within [floor, cap]
    assert t_instant.source == DEFAULT
    assert t_boast == Timeout(5.0, LEARNED)
    assert t_glacial == Timeout(600.0, LEARNED)


def test_one_absurd_sample_among_many_does_not_move_the_timeout():
    steady = history(*DESKTOP, answers=30)
    spoiled = history(*DESKTOP, answers=30)
    spoiled.succeeded(0.001, 0.0, 10**9)  # one answer that claims to be impossibly fast
    assert policy().for_peer("p", None, 256, spoiled) == policy().for_peer("p", None, 256, steady)


finite = st.floats(min_value=0.0, max_value=1e9, allow_nan=False)
anything = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=300, deadline=None)
@given(samples=st.lists(st.tuples(finite | anything, finite | anything,
                                  st.integers(-5, 10**12)), max_size=40),
       max_tokens=st.integers(0, 10**7), timeouts=st.integers(-3, 100))
def test_whatever_the_samples_a_learned_timeout_is_within_floor_and_cap(samples, max_tokens,
                                                                         timeouts):
    m = PeerMetrics()
    for latency, ttft, tokens in samples:
        m.succeeded(latency, ttft, tokens)
    m.timeouts_in_row = timeouts
    t = policy().for_peer("p", None, max_tokens, m)
    assert t.source in (LEARNED, DEFAULT) and math.isfinite(t.s)
    if t.source == LEARNED:
        assert 5.0 <= t.s <= 600.0


# -- timeouts are censored samples -------------------------------------------------------

def test_a_timeout_raises_the_learned_value_and_a_success_brings_it_back():
    m = history(*DESKTOP)
    before = policy().for_peer("desktop", None, 256, m).s
    ttfts, rates = list(m.ttfts), list(m.rates)
    # When a candidate times out
    m.failed("desktop timed out waiting for the answer", timeout=True)
    # Then it taught nothing about speed, and the timeout went up, twice as long
    assert (list(m.ttfts), list(m.rates)) == (ttfts, rates)
    once = policy().for_peer("desktop", None, 256, m).s
    assert once == pytest.approx(2 * before)
    # and a second timeout in a row doubles it again, never past the cap
    m.failed("again", timeout=True)
    assert policy().for_peer("desktop", None, 256, m).s == pytest.approx(4 * before)
    for _ in range(20):
        m.failed("again", timeout=True)
    assert policy().for_peer("desktop", None, 256, m).s == 600.0
    # a failure that is not a timeout does not back off
    other = history(*DESKTOP)
    other.failed("desktop: out of memory")
    assert policy().for_peer("desktop", None, 256, other).s == before
    # When it answers again at its old pace, the back-off is over
    m.succeeded(needs_s(*DESKTOP, 100), DESKTOP[0], 100)
    assert policy().for_peer("desktop", None, 256, m).s == pytest.approx(before)


def swarm_with_history(ttft_s: float, rate: float) -> Swarm:
    s = Swarm(default_s=60.0)
    s.service.timeouts.learning = LEARNING
    s.add(b"a", cancel=True)
    m = s.metrics.peer("A")
    for _ in range(10):
        m.succeeded(ttft_s + 99 / rate, ttft_s, 100)
    return s


def running(s: Swarm):
    (job,) = s.service.jobs.values()
    (cand,) = [c for c in job.candidates if c.state == RUNNING]
    return cand


def test_dispatch_arms_each_candidate_with_its_peers_learned_timeout_for_its_max_tokens():
    # Given a desktop-paced peer
    s = swarm_with_history(*DESKTOP)
    # When a 1024-token candidate starts at t=100
    s.submit(now=100.0, candidates=1, max_tokens=1024, timeout_s=600)
    assert [ident for ident, _ in tasks(s.sent())] == [b"a"]
    cand = running(s)
    # Then its timer is the learned one for 1024 tokens, not the 60 s default
    want = policy().for_peer("A", None, 1024, s.metrics.peer("A"))
    assert want.source == LEARNED and want.s != 60.0
    assert cand.timeout_at == pytest.approx(100.0 + want.s)


def test_a_timed_out_candidate_does_not_teach_the_dispatcher_that_the_peer_is_fast():
    # Given a desktop-paced peer and a 256-token candidate on it
    s = swarm_with_history(*DESKTOP)
    s.submit(now=0.0, candidates=1, max_tokens=256, timeout_s=600)
    first = running(s).timeout_at
    samples = (len(s.metrics.peer("A").ttfts), len(s.metrics.peer("A").rates))
    # When it hangs past its timeout (and its late FINAL frees the slot)
    s.service.tick(first + 0.01)
    assert s.metrics.peer("A").timeouts == 1
    s.reply(b"a", first + 0.02)
    s.sent()
    # Then no sample was taken from it, and the next candidate on it gets longer
    assert (len(s.metrics.peer("A").ttfts), len(s.metrics.peer("A").rates)) == samples
    s.service.jobs.clear()
    s.submit(now=1000.0, candidates=1, max_tokens=256, timeout_s=600)
    assert running(s).timeout_at - 1000.0 == pytest.approx(2 * first)


# -- the small pieces --------------------------------------------------------------------

@pytest.mark.parametrize("latency, ttft, tokens, rate", [
    (10.0, 1.0, 10, 1.0),
    (2.0, None, 10, None),     # no first token seen
    (2.0, 1.0, 1, None),       # one token: nothing after the first
    (1.0, 1.0, 10, None),      # every token at once
    (1.0, 2.0, 10, None),      # nonsense: the first token after the end
    (float("nan"), 0.0, 10, None),
    (1e-12, 0.0, 10**12, 1e6),  # clamped
    (1e12, 0.0, 2, 1e-3),
])
def test_decode_rate(latency, ttft, tokens, rate):
    assert decode_rate(latency, ttft, tokens) == (pytest.approx(rate) if rate else None)


def test_quantiles_by_nearest_rank():
    xs = list(range(1, 101))
    assert quantile(xs, 0.95) == 95 and quantile(xs, 0.10) == 10
    assert quantile([3.0], 0.95) == 3.0 and quantile([5, 1, 3], 0.10) == 1


@pytest.mark.parametrize("floor, cap", [(0.0, 10.0), (10.0, 5.0), (1.0, math.inf)])
def test_a_floor_above_the_cap_is_refused(floor, cap):
    with pytest.raises(ValueError, match="floor"):
        Learning(floor, cap)


# -- long prompts ------------------------------------------------------------------------

def chat_history(ttft_s: float, prompt_chars: int, answers: int = 10) -> PeerMetrics:
    """A desktop's history of short chats: each prompt of `prompt_chars`, read in ttft_s."""
    m = PeerMetrics()
    for _ in range(answers):
        m.succeeded(ttft_s + 99 / 60.0, ttft_s, 100, prompt_chars)
    return m


def test_a_long_prompt_is_not_cut_off_by_a_history_of_short_chats():
    # Given a desktop that read 40-character prompts in 0.2 s
    m = chat_history(0.2, 40)
    short = policy().for_peer("d", None, 64, m, prompt_chars=40)
    # When a coding agent sends 20,000 characters (a system prompt and tool schemas)
    long = policy().for_peer("d", None, 64, m, prompt_chars=20_000)
    # Then its timeout allows for reading them at the pace the peer reads at: 0.2 s per
    # 40 chars is 100 s for 20,000, doubled by the factor
    assert short.source == long.source == LEARNED
    assert short.s == LEARNING.floor_s
    assert long.s >= 2 * 20_000 * 0.2 / 40


def test_without_prefill_samples_the_prompt_size_changes_nothing():
    m = history(*DESKTOP)  # answers that said nothing about their prompt's size
    assert policy().for_peer("d", None, 256, m, prompt_chars=50_000).s == \
        policy().for_peer("d", None, 256, m).s


def test_prompt_chars_counts_the_prompt_or_the_messages_and_the_tools():
    from broker.sampling_plan import prompt_chars
    from common.bodies import Sampling
    assert prompt_chars(Sampling(prompt="x" * 30)) == 30
    chat = Sampling(messages=({"role": "system", "content": "s" * 10},
                              {"role": "user", "content": "u" * 5}))
    assert prompt_chars(chat) == 15
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert prompt_chars(Sampling(prompt="x", tools=(tool,))) == 1 + len(str(tool))


def test_dispatch_scales_the_timeout_to_the_candidates_prompt():
    s = Swarm(default_s=60.0)
    s.service.timeouts.learning = LEARNING
    s.add(b"a", cancel=True)
    m = s.metrics.peer("A")
    for _ in range(10):
        m.succeeded(0.2 + 99 / 60.0, 0.2, 100, 40)
    s.submit(now=100.0, candidates=1, max_tokens=16, timeout_s=600, prompt="p" * 20_000)
    assert running(s).timeout_at - 100.0 >= 2 * 20_000 * 0.2 / 40
