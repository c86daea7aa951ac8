"""The live web page in a real browser (issue 12): headless Debian chromium, driven by
playwright, against a real broker and two real workers serving the bundled model.

The page asks a question and the candidates stream in, then the vote and its winner show;
a worker killed with SIGKILL is marked lost; a broker stopped and started again on the same
ports is followed by the page on its own. The screenshots go to $SWARM_SCREENSHOTS (`make
screenshots` puts them in docs/screenshots, where the README shows them).
"""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Procs, ask, free_port, wait_for_peers
from tests import web_util
from tests.web_util import open_page, status_of, web_broker

browser, shots = web_util.browser, web_util.shots  # the fixtures, for this module

pytestmark = [pytest.mark.model, pytest.mark.timeout(240)]
QUESTION = "Tell me a short story about a fox who finds a lantern."

# every length each candidate's text had on the page while the job ran, one per redraw
RECORD_LENGTHS = """() => {
  window.lengths = {};
  new MutationObserver(() => {
    if (document.querySelector('#job')?.dataset.state !== 'running') return;
    for (const card of document.querySelectorAll('#job .cand')) {
      const seen = (window.lengths[card.dataset.cand] ??= []);
      const n = card.querySelector('.cand-text').textContent.length;
      if (n && seen[seen.length - 1] !== n) seen.push(n);
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""

SOME_TEXT_OR_ENDED = """() => document.querySelector('#job')?.dataset.state !== 'running' ||
  [...document.querySelectorAll('#job .cand-text')].some((t) => t.textContent.length >= 30)"""


class WebSwarm:
    """A broker serving the page, and two workers with the real model (w1: 2 slots, w2: 1)
    that have both served a job."""

    def __init__(self, procs: Procs, model: str):
        self.procs, self.port, self.http = procs, free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http}/"
        self.broker = web_broker(procs, self.port, self.http, name="broker-1")
        self.workers = {name: procs.worker(self.port, name, "--model", model, "--no-mdns",
                                           "--instances", slots)
                        for name, slots in (("w1", "2"), ("w2", "1"))}
        wait_for_peers(self.port, set(self.workers), timeout_s=120)
        # one job first, so both have served (a peer that never did is not listed once gone)
        done = ask("--broker", f"tcp://127.0.0.1:{self.port}", "--candidates", "3",
                   "--max-tokens", "4", "Say hello.")
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, model_path):
    procs = Procs(tmp_path_factory.mktemp("web"))
    try:
        yield WebSwarm(procs, str(model_path))
    finally:
        procs.stop_all()


def peer(name: str, state: str, where: str = "#peers") -> str:
    return f'{where} .peer[data-peer="{name}"][data-state="{state}"]'


def test_a_question_asked_on_the_page_streams_and_its_winner_shows(swarm, browser, shots):
    # Given the page of a swarm with two live workers
    page = open_page(browser, swarm.url)
    page.wait_for_selector('#conn[data-state="live"]')
    page.wait_for_selector(peer("w1", "live"))
    page.wait_for_selector(peer("w2", "live"))
    assert page.text_content("#conn") == "live"
    page.evaluate(RECORD_LENGTHS)

    # When a question is asked on it, three candidates
    page.fill("#ask-question", QUESTION)
    page.fill("#ask-candidates", "3")
    page.fill("#ask-max-tokens", "40")
    page.select_option("#ask-strategy", "auto")
    page.click("#ask-submit")

    # Then its job is shown at once and its candidates' text streams in while it runs
    page.wait_for_selector('#job[data-state="running"] .cand .cand-text:not(:empty)')
    page.wait_for_function(SOME_TEXT_OR_ENDED)  # a picture with more than a word in it
    shots(page, "job-in-flight")
    job = page.get_attribute("#job", "data-job")
    assert job
    page.wait_for_selector(f'#jobs .job-row[data-job="{job}"][data-state="done"]')
    page.wait_for_selector('#job[data-state="done"] .cand.winner')
    lengths = page.evaluate("window.lengths")
    assert any(len(seen) > 1 for seen in lengths.values()), \
        f"no candidate's text grew while the job ran: {lengths}"

    # And the vote shows: one winner, its method and the reason it won
    assert page.locator("#job .cand").count() == 3
    assert page.locator("#job .cand.winner").count() == 1
    assert page.locator("#job .cand.winner .cand-text").text_content().strip()
    reason = page.text_content("#vote .reason").strip()
    assert reason and reason != "\u2014"
    assert page.locator("#vote tr.winner-row").count() == 1
    assert page.text_content("#ask-error") == ""
    shots(page, "vote")
    page.context.close()


def test_a_killed_worker_is_lost_and_a_restarted_broker_is_followed(swarm, browser, shots):
    # Given the page, both workers live
    page = open_page(browser, swarm.url)
    page.wait_for_selector(peer("w1", "live"))
    page.wait_for_selector(peer("w2", "live"))

    # When w2 is killed outright, its card turns lost (it has served: the broker knows it)
    swarm.workers["w2"].send_signal(signal.SIGKILL)
    page.wait_for_selector(peer("w2", "lost"))
    assert page.locator(peer("w1", "live")).count() == 1
    shots(page, "peers")

    # When the broker is stopped (as systemd stops it) while the page watches, it stops:
    # the page's stream ends with it, and the page says it is reconnecting
    swarm.broker.send_signal(signal.SIGINT)
    assert swarm.broker.wait(60) == 0
    page.wait_for_selector('#conn[data-state="reconnecting"]')
    assert page.text_content("#conn") == "reconnecting"

    # Then a new broker on the same ports is found on its own, with a fresh snapshot: the
    # surviving worker is back, and nothing of the old broker's is left on the page
    swarm.broker = web_broker(swarm.procs, swarm.port, swarm.http, name="broker-2")
    page.wait_for_selector('#conn[data-state="live"]')
    page.wait_for_selector(peer("w1", "live"))
    page.wait_for_function("() => !document.querySelector('#jobs .job-row')")
    assert page.locator('#peers .peer[data-peer="w2"]').count() == 0
    assert page.get_attribute("#job", "data-job") is None
    page.context.close()


def test_the_api_key_guards_the_page_and_its_stream(browser, procs):
    # Given a broker with an API key
    port, http = free_port(), free_port()
    web_broker(procs, port, http, "--api-key", "sesame")
    url = f"http://127.0.0.1:{http}"

    # Then without it the page is the login form, and the stream and the ask are refused
    assert status_of(f"{url}/") == 401
    assert status_of(f"{url}/ui/events") == 401
    assert status_of(f"{url}/static/app.js") == 401
    page = open_page(browser, url + "/")
    assert page.locator("#ask").count() == 0

    # When a wrong key is typed, the form comes back and says so
    page.fill('input[name="key"]', "open")
    page.click('button[type="submit"]')
    page.wait_for_selector("#wrong:not([hidden])")

    # When the key is typed in, the page loads and its stream is live
    page.fill('input[name="key"]', "sesame")
    page.click('button[type="submit"]')
    page.wait_for_selector('#conn[data-state="live"]')
    assert page.locator("#ask-question").count() == 1
    cookie = next(c for c in page.context.cookies() if c["name"] == "swarm_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # And that cookie opens the stream to other clients too, while nothing else does
    assert status_of(f"{url}/ui/events", f"swarm_session={cookie['value']}") == 200
    assert status_of(f"{url}/ui/events", "swarm_session=forged") == 401
    ask = urllib.request.Request(f"{url}/ui/ask", data=b'{"question": "hi"}', method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(ask, timeout=10)
    assert refused.value.code == 401
    page.context.close()


ODD_EVENTS = """[
  [{"type": "snapshot", "broker": null, "peers": [null, 7, {"name": null, "live": "yes",
    "profile": {"hardware": {"gpus": [null, {"name": 3, "vram_total_mb": "x"}]}},
    "metrics": {"requests": 0, "successes": null}}, {"name": "<b>x</b>", "live": true,
    "slots": -1, "busy": 9, "profile": {"model": ["m"]}, "metrics": "none"}],
    "jobs": [null, {"id": 5}, {"id": "j1", "question": {"a": 1}, "cands": [null, {"cand": "0"},
      {"cand": 0, "text": 12}], "final": {"winner": null, "candidates": [null, {"cand": 0,
      "agreed": "all"}], "vote": []}}]}],
  [{"type": "cand", "job": "j1", "cand": 0, "event": "token", "text": null},
   {"type": "cand", "job": "nope", "cand": 1, "event": "token", "text": "x"},
   {"type": "cand", "job": "j1", "cand": -1}, {"type": "end", "job": "j1", "final": 3},
   {"type": "peers", "peers": {"not": "a list"}},
   {"type": "peers", "peers": [null, {"name": "<b>x</b>", "live": true, "slots": "2",
    "metrics": {"requests": 4, "successes": 3, "tokens_per_s": "fast"}}]}, {"type": "job", "job": {"id": null}},
   {"type": "what"}, null, 4],
  "not even a list", "{"
]"""

FAKE_STREAM = """(messages) => {
  window.EventSource = class {
    static CLOSED = 2;
    constructor() {
      this.readyState = 1;
      setTimeout(() => { this.onopen?.(); for (const data of messages)
        this.onmessage?.({data: typeof data === 'string' ? data : JSON.stringify(data)}); }, 0);
    }
    close() {}
  };
}"""


def test_odd_values_off_the_stream_never_break_the_page(browser):
    """Logic only: the page's own files, a stand-in stream feeding it nonsense; the page
    shows what it can ("—" for the rest), throws nothing, and stays live."""
    page = browser.new_context(viewport=web_util.VIEWPORT).new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    web = Path(__file__).parent.parent / "broker" / "web"
    page.route("http://page.test/**", lambda route: route.fulfill(
        path=str(web / ("index.html" if route.request.url.endswith("/") else
                        route.request.url.rsplit("/", 1)[1]))))
    page.add_init_script(f"({FAKE_STREAM})({ODD_EVENTS})")
    page.goto("http://page.test/")
    page.wait_for_selector('#conn[data-state="live"]')
    page.wait_for_selector('#job[data-job="5"]')  # the newest, when no job says when it began
    page.click('#jobs .job-row[data-job="j1"]')
    page.wait_for_selector('#job[data-job="j1"] .cand[data-cand="0"]')
    assert errors == []
    assert page.locator('#peers .peer[data-peer="<b>x</b>"]').count() == 1  # as text
    assert page.locator("#peers b:text-is('x')").count() == 0               # never as markup
    assert "\u2014" in page.text_content("#peers")
    assert page.locator("#jobs .job-row").count() == 2
    page.context.close()
