"""End to end in Chromium: upload → prepare → memory → train → compare → export with parity.

Drives Debian's chromium through Playwright against `python app.py` on a free port with its own
STUDIO_HOME. Screenshots of every step go to test-artifacts/ (and to assets/screenshots/ when
STUDIO_UPDATE_SCREENSHOTS=1, for the README).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
HOME: dict = {}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, embedded_model_dir):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make test installs it with apt-get)")
    pytest.importorskip("playwright")
    home = tmp_path_factory.mktemp("browser-home")
    shutil.copytree(embedded_model_dir, home / "models" / embedded_model_dir.name, copy_function=os.link)
    port = free_port()
    log = open(tmp_path_factory.mktemp("logs") / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--home", str(home),
                             "--no-browser"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    HOME["path"] = home
    for _ in range(120):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def open_studio(browser, url: str, **page_args):
    """A new browser session (its own cookies, so its own Gradio state) on the studio page."""
    page = browser.new_context(**page_args).new_page()
    page.goto(url)
    page.get_by_text("Fine-tune an open LLM").wait_for()
    return page


def upload_sample(page) -> None:
    page.locator("input[type=file]").first.set_input_files(str(ROOT / "assets/sample/product_faq.jsonl"))


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if os.environ.get("STUDIO_UPDATE_SCREENSHOTS") == "1":
        dst = ROOT / "assets" / "screenshots"
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / f"{name}.png", dst / f"{name}.png")


def test_buttons_that_cannot_act_yet_say_why(app_url, browser):
    """Runs first, on an empty studio: nothing to train on, compare or export yet."""
    page = open_studio(browser, app_url)
    page.get_by_role("tab", name="3 · Train").click()
    page.get_by_text("No dataset yet").wait_for()
    assert not page.get_by_role("button", name="Start training").is_enabled()
    page.get_by_role("tab", name="4 · Compare").click()
    page.get_by_text("Nothing to compare yet").wait_for()
    assert not page.get_by_role("button", name="Ask both").is_enabled()
    page.get_by_role("tab", name="5 · Export").click()
    page.get_by_text("Nothing to export yet").wait_for()
    assert not page.get_by_role("button", name="Export", exact=True).is_enabled()


def test_whole_flow(app_url, browser):
    page = open_studio(browser, app_url, viewport={"width": 1400, "height": 1000})
    # 1 · Data
    upload_sample(page)
    page.get_by_role("button", name="Prepare dataset").click()
    page.get_by_text("80 examples (train 72, validation 8)").wait_for(timeout=120_000)
    page.get_by_text("highlighted").first.wait_for()
    shot(page, "step1-data")
    # 2 · Memory
    page.get_by_role("tab", name="2 · Memory").click()
    page.get_by_role("button", name="Estimate", exact=True).click()
    page.get_by_text("GB at peak").wait_for(timeout=60_000)
    shot(page, "step2-memory")
    # 3 · Train (a short run), with a double click on Start
    page.get_by_role("tab", name="3 · Train").click()
    steps = page.get_by_label("Steps")
    steps.fill("12")
    start = page.get_by_role("button", name="Start training")
    start.dblclick()
    page.get_by_text("completed, step 12/12").wait_for(timeout=300_000)
    time.sleep(4)  # let the last plot update render
    shot(page, "step3-train")
    # 4 · Compare: base and tuned differ
    page.get_by_role("tab", name="4 · Compare").click()
    page.get_by_label("Your question").fill("How much does the Nimbus Orbit cost?")
    page.get_by_role("button", name="Ask both").click()
    page.get_by_text("Both answered — the answers differ.").wait_for(timeout=180_000)
    shot(page, "step4-compare")
    # 5 · Export q8_0 with parity
    page.get_by_role("tab", name="5 · Export").click()
    page.get_by_role("button", name="Export", exact=True).click()
    page.get_by_text("Parity ✅ passed").wait_for(timeout=300_000)
    shot(page, "step5-export")
    page.get_by_role("tab", name="History").click()
    page.get_by_text("Datasets, runs and exports").wait_for()
    time.sleep(2)
    shot(page, "history")
    from studio.api import Studio

    runs = Studio(HOME["path"]).runs_list()
    assert [r["status"] for r in runs] == ["completed"]  # the double click made one run
    assert "Traceback" not in page.content()


def test_two_tabs_keep_their_own_state(app_url, browser):
    """Two browser sessions prepare different datasets; each Train step offers its own."""
    pages = {}
    for name in ("tab-a", "tab-b"):
        p = open_studio(browser, app_url)
        upload_sample(p)
        p.get_by_label("Dataset name").fill(name)
        pages[name] = p
    for p in pages.values():
        p.get_by_role("button", name="Prepare dataset").click()
    for name, p in pages.items():
        p.get_by_text(f"{name} v1").wait_for(timeout=120_000)
        p.get_by_role("tab", name="3 · Train").click()
    time.sleep(3)
    assert pages["tab-a"].get_by_role("combobox", name="Dataset", exact=True).input_value() == "tab-a@v1"
    assert pages["tab-b"].get_by_role("combobox", name="Dataset", exact=True).input_value() == "tab-b@v1"
    assert "No run yet." in pages["tab-b"].content()


def test_unsupported_upload_gets_a_message(app_url, browser):
    page = open_studio(browser, app_url)
    bad = ARTIFACTS / "notes.exe"
    ARTIFACTS.mkdir(exist_ok=True)
    bad.write_bytes(b"MZ")
    page.locator("input[type=file]").first.set_input_files(str(bad))
    page.get_by_role("button", name="Prepare dataset").click()
    msg = page.get_by_text("unsupported file type").or_(page.get_by_text("Upload at least one file"))
    msg.first.wait_for(timeout=60_000)
    assert "Traceback" not in page.content()
