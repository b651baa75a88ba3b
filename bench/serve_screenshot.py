"""Take docs/img/serve.png: SmolLM2 served on loopback, a short chat driven in Debian's Chromium (playwright).

    python bench/serve_screenshot.py [OUT.png]   (after `rlhf-organic prepare-model smollm2`; about 2.5 min on 2 CPU cores)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from rlhf_organic.serve.app import Server
from rlhf_organic.serve.generate import Sampling, load_replier
from rlhf_organic.serve.run import open_log_folder, serve_in_background

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def main(out: str) -> None:
    replier = load_replier(MODEL, Sampling(max_new_tokens=40, temperature=0.7), log=print)
    running = serve_in_background(Server(replier, open_log_folder(Path(tempfile.mkdtemp()) / "log")))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 900, "height": 900}).new_page()
            page.set_default_timeout(180_000)
            page.goto(running.url)
            page.wait_for_selector("body[data-ready='1']")
            page.fill("#text", "Can you recommend a good book for a long train ride?")
            page.click("#send")
            page.locator("li.bot[data-message-id]").first.wait_for()
            turn = page.locator("li.bot").last
            turn.locator("button[data-fb='down']").click()
            turn.locator("button[data-reason='nonsensical']").click()
            turn.get_by_label("Tell us more (optional)").fill("It never named a book.")
            page.fill("#text", "What is the capital of France?")
            page.click("#send")
            page.locator("li.bot[data-message-id]").nth(1).wait_for()
            page.locator("li.bot").last.locator("button[data-fb='up']").click()
            page.set_checked("#ab", True)
            page.fill("#text", "Tell me a fun fact about octopuses.")
            page.click("#send")
            page.locator("button[data-choose='b']").wait_for()
            page.screenshot(path=out, full_page=True)
            browser.close()
    finally:
        running.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1] / "docs" / "img" / "serve.png"))
