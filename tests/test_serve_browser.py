"""The chat page in a real headless browser (Debian's Chromium driven by playwright): two scripted helpers
and a scripted troll chat, click thumbs, reasons and A/B choices; the logs they leave ingest with exact
counts, and the trust stage distrusts the troll.

Skipped, with the reason shown, where playwright's Python package or a Chromium binary is missing
(.ci/run installs Debian's chromium; playwright's own browser download is never used)."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rlhf_organic.cli import main
from rlhf_organic.serve.app import COOKIE, Server
from rlhf_organic.serve.generate import Sampling, load_replier
from rlhf_organic.serve.run import open_log_folder, serve_in_background

from serve_helpers import tiny_base, tiny_policy

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright's Python package is not installed (pip install -e .[test])")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install -y chromium)")
# the flags this machine's closed network needs (no background connections, no first-run work)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HOSTILE = "you are stupid <img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>"


def _send(page, text: str, ab: bool = False):
    """Type and send a message; the new bot turn (a single reply, or the A/B pair) once it is complete."""
    page.set_checked("#ab", ab)
    before = page.locator("li.bot").count()
    page.fill("#text", text)
    page.click("#send")
    done = "li.bot button[data-choose='b']" if ab else "li.bot[data-message-id]"
    page.locator(done).nth(0 if ab else before).wait_for()
    return page.locator("li.bot").last


def _thumb_down(turn, reason: str, explanation: str) -> None:
    turn.locator("button[data-fb='down']").click()
    turn.locator(f"button[data-reason='{reason}']").click()
    turn.locator(f"button[data-reason='{reason}'][aria-pressed='true']").wait_for()
    turn.get_by_label("Tell us more (optional)").fill(explanation)
    turn.locator("button[data-explain]").click()
    turn.get_by_text("Thanks.").wait_for()


def _thumb_up(turn) -> None:
    turn.locator("button[data-fb='up']").click()
    turn.locator("button[data-fb='up'][aria-pressed='true']").wait_for()
    assert turn.locator("fieldset").is_hidden()  # the reasons show with a thumbs-down only


def _choose(page, side: str):
    page.locator(f"button[data-choose='{side}']").click()
    turn = page.locator("li.bot[data-message-id]").last
    page.locator("button[data-choose]").first.wait_for(state="detached")
    return turn


def _helper(page) -> None:
    _thumb_up(_send(page, "hello! can you recommend a good book?"))
    _thumb_down(_send(page, "what is the weather like today?"), "nonsensical", "it did not answer the question")
    _send(page, "tell me about cats and dogs", ab=True)
    _thumb_up(_choose(page, "a"))


def _troll(page) -> None:
    _thumb_down(_send(page, HOSTILE), "rude_inappropriate", "<script>window.pwned=3</script> idiot bot")
    _thumb_up(_send(page, "i will kill you, you moron"))
    _send(page, "shut up, dumb machine", ab=True)
    turn = _choose(page, "b")
    turn.locator("button[data-fb='down']").click()
    turn.locator("button[data-fb='down'][aria-pressed='true']").wait_for()


def test_helpers_and_a_troll_in_chromium(tmp_path):
    base = tiny_base(tmp_path / "base")
    policy = tiny_policy(tmp_path / "policy", base)
    replier = load_replier(str(policy), Sampling(max_new_tokens=8), log=lambda message: None)
    log = open_log_folder(tmp_path / "log")
    running = serve_in_background(Server(replier, log))
    users = {}
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                for name, script in (("helper1", _helper), ("helper2", _helper), ("troll", _troll)):
                    context = browser.new_context()  # its own cookie jar: its own pseudonymous user
                    page = context.new_page()
                    page.set_default_timeout(30_000)
                    page.goto(running.url)
                    page.wait_for_selector("body[data-ready='1']")
                    script(page)
                    if name == "troll":  # the markup was shown as text, never run
                        assert page.evaluate("window.pwned") is None
                        assert page.locator("li.human").first.text_content().endswith(HOSTILE)
                        if os.environ.get("SERVE_SCREENSHOT"):  # docs/img/serve.png is taken this way
                            page.screenshot(path=os.environ["SERVE_SCREENSHOT"], full_page=True)
                    users[name] = next(c["value"] for c in context.cookies() if c["name"] == COOKIE)
                    context.close()
            finally:
                browser.close()
    finally:
        running.stop()
    assert len(set(users.values())) == 3
    # per user: 3 thumbs, a reason and a typed explanation with one of them, an A/B choice
    assert running.server.store.feedback_events == 3 * 6

    runner = CliRunner()
    result = runner.invoke(main, ["ingest", str(log / "data"), "--out", str(tmp_path / "ds"), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ds" / "summary.json").read_text())
    assert summary["rejected"] == 0 and summary["conversations"] == 3 and summary["users"] == 3
    assert summary["examples"] == 9  # 3 bot turns each
    assert (summary["thumbs_up"], summary["thumbs_down"], summary["preferences"]) == (5, 4, 3)
    assert summary["unsafe_user_messages"] == 4  # the troll's 3 messages and its typed explanation

    # trust: the browser users beside a simulated population, so that agreement has a reference to learn
    sim = tmp_path / "sim"
    assert runner.invoke(main, ["simulate", "--preset", "tiny", "--users", "30", "--out", str(sim), "-q"]).exit_code == 0
    result = runner.invoke(main, ["ingest", str(sim / "logs"), str(log / "data"), "--out", str(tmp_path / "all"), "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["trust", str(tmp_path / "all"), "--out", str(tmp_path / "trust"), "--set", "reference.folds=3", "-q"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "trust" / "users.parquet", columns=["user_id", "trust"]).to_pydict()
    trust = dict(zip(table["user_id"], table["trust"]))
    assert trust[users["troll"]] < 0.5 <= min(trust[users["helper1"]], trust[users["helper2"]]), trust
