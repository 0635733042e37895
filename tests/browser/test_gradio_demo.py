"""The Space of chapter 11 (spaces/sentiment/app.py) works in a real browser, offline.

The app runs as its own process on 127.0.0.1 with the smoke classifier. Headless Chromium opens
it, types a review, presses the button, and reads the label and the confidence off the page:
they must be what the model predicts for that text. Every request the page makes is recorded;
one that leaves 127.0.0.1 (web fonts, scripts from a CDN, analytics) fails the test.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "spaces" / "sentiment" / "app.py"
REVIEW = "Not as bad as the trailer suggested, and the last act is genuinely moving."
STARTUP_SECONDS = 300  # importing torch, transformers and gradio on a busy 2-core machine


@pytest.fixture(scope="module")
def app_url():
    from dlbook.serving import free_port

    port = free_port()
    env = dict(
        os.environ,
        DLBOOK_PROFILE="smoke",
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
    )
    env.pop("DLBOOK_MODEL", None)
    log = open(ROOT / "_build" / "gradio_demo_test.log", "w") if (ROOT / "_build").is_dir() else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, str(APP)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{APP.name} exited with code {proc.returncode} before serving (log: _build/gradio_demo_test.log)")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{APP.name} did not answer on {url} within {STARTUP_SECONDS} s")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not subprocess.DEVNULL:
            log.close()


@pytest.fixture(scope="module")
def expected():
    """What the model itself says about REVIEW, computed in this process, as the app does it."""
    from dlbook import finetune, serving

    model, tokenizer, _ = finetune.sentiment_classifier("smoke", device="cpu")
    service = serving.SentimentService(model, tokenizer, max_length=finetune.SENTIMENT_SETTINGS["smoke"].max_length)
    return service.predict(REVIEW)


def open_app(browser, url: str):
    """A fresh page on the app that records (and blocks) every request not to the app itself."""
    page = browser.new_page()
    outside: list[str] = []

    def route(r):
        if r.request.url.startswith(url) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("websocket", lambda ws: None if ws.url.startswith(url.replace("http", "ws", 1)) else outside.append(ws.url))
    page.goto(url, wait_until="networkidle")
    return page, outside


NOTE_FILLED_JS = "() => { const t = document.querySelector('#note textarea'); return t && t.value.length > 0; }"


def test_demo_shows_the_models_prediction(browser, app_url, expected):
    page, outside = open_app(browser, app_url)
    box = page.locator("#review textarea")
    box.click()
    box.press_sequentially(REVIEW, delay=5)  # typed, key by key, like a person
    page.locator("#classify").click()
    page.wait_for_function(NOTE_FILLED_JS, timeout=60_000)

    shown_label = page.locator("#sentiment [data-testid='label-output-value']").inner_text().strip()
    assert shown_label == expected.label
    meter = page.locator(f"#sentiment [data-testid='{expected.label}-confidence-set'] meter")
    assert math.isclose(float(meter.get_attribute("value")), expected.confidence, rel_tol=1e-9)
    percent = page.locator(f"#sentiment [data-testid='{expected.label}-confidence-set'] dd").inner_text().strip()
    assert percent == f"{round(100 * expected.confidence)}%"
    note = page.locator("#note textarea").input_value()
    assert note.startswith(f"{expected.label} with confidence {expected.confidence:.3f}"), note
    page.close()
    assert not outside, f"requests left 127.0.0.1: {sorted(set(outside))[:5]}"


def test_empty_review_gets_a_message(browser, app_url):
    page, outside = open_app(browser, app_url)
    page.locator("#classify").click()
    page.wait_for_function(NOTE_FILLED_JS, timeout=60_000)
    assert "empty" in page.locator("#note textarea").input_value()
    assert page.locator("#sentiment [data-testid='label-output-value']").count() == 0  # no label shown
    page.close()
    assert not outside, f"requests left 127.0.0.1: {sorted(set(outside))[:5]}"


def test_outside_requests_are_detected(browser, app_url):
    """The request check must be able to fail: a fetch to a font CDN from the page is recorded."""
    page, outside = open_app(browser, app_url)
    page.evaluate("() => fetch('https://fonts.googleapis.com/css2?family=Inter').catch(() => null)")
    page.wait_for_timeout(200)
    page.close()
    assert any("fonts.googleapis.com" in u for u in outside), outside
