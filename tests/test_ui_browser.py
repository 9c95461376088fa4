"""The web UI in a real browser: ``echomimic ui`` on 127.0.0.1, driven by Debian's Chromium.

Playwright drives the system's Chromium (``/usr/bin/chromium`` or ``$ECHOMIMIC_CHROMIUM``) through
``executable_path``; no browser is downloaded. Every request the page makes is recorded, and any
request that does not go to 127.0.0.1 is aborted and fails the test. Screenshots at desktop
(1280 px) and phone (390 px) width are written to ``$ECHOMIMIC_TEST_ARTIFACTS`` (default
``tests/artifacts/``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("gradio", reason="the web UI needs its extra: pip install 'echomimic[ui]'")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser tests need the playwright package")


from service_harness import find_chromium  # noqa: E402

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.realtime,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install "
                                                "chromium, or set ECHOMIMIC_CHROMIUM)"),
]

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
FPS = 25.0


def artifacts_dir() -> Path:
    path = Path(os.environ.get("ECHOMIMIC_TEST_ARTIFACTS")
                or Path(__file__).resolve().parent / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """``echomimic ui`` on a free port of 127.0.0.1 (a real process), stopped afterwards."""
    from service_harness import Proc, free_port, wait_until_answers

    port = free_port()
    work = tmp_path_factory.mktemp("ui")
    env = dict(os.environ, ECHOMIMIC_UI_DIR=str(work / "jobs"), GRADIO_TEMP_DIR=str(work / "gr"))
    proc = Proc([sys.executable, "-m", "echomimic", "ui", "--port", str(port)], env,
                work / "server.log")
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_answers(proc, url, "echomimic ui")
        yield url
    finally:
        proc.stop(15)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Watched:
    """A page whose requests are recorded; requests that leave 127.0.0.1 are aborted."""

    def __init__(self, browser, width: int, height: int):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.set_default_timeout(30_000)

    def _route(self, route) -> None:
        url = route.request.url
        host = urlparse(url).hostname or ""
        if url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def open(self, url: str) -> None:
        self.page.goto(url, wait_until="load")
        self.page.wait_for_selector("#generate")

    def outside(self) -> list[str]:
        bad = [u for u in self.requests
               if not u.startswith(("data:", "blob:")) and urlparse(u).hostname not in LOOPBACK]
        return bad + self.blocked

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser):
    pages: list[Watched] = []

    def make(width: int = 1280, height: int = 900) -> Watched:
        w = Watched(browser, width, height)
        pages.append(w)
        return w

    yield make
    for w in pages:
        w.close()


@pytest.fixture(scope="module")
def two_second_speech(tmp_path_factory):
    """About two seconds of synthesized English speech (WAV) and its exact length."""
    from echomimic.speech import synthesize, write_wav

    audio, _ = synthesize("Good morning everyone, nice to see you.", lang="en", rate=190)
    path = write_wav(tmp_path_factory.mktemp("ui_speech") / "speech.wav", audio)
    return path, float(audio.duration)


def _upload(page, elem_id: str, path: Path) -> None:
    page.locator(f"#{elem_id} input[type=file]").first.set_input_files(str(path))


def _result_duration(page, timeout_ms: int = 90_000) -> float:
    page.wait_for_function(
        "() => { const v = document.querySelector('#result video');"
        " return v && Number.isFinite(v.duration) && v.duration > 0; }", timeout=timeout_ms)
    return float(page.evaluate("() => document.querySelector('#result video').duration"))


def test_page_loads_offline_on_desktop_and_phone(ui_server, watched):
    for width, height, name in ((1280, 900, "desktop"), (390, 844, "phone")):
        w = watched(width, height)
        w.open(ui_server)
        page = w.page
        for tab in ("Audio", "Video", "Mixed", "Text"):
            # the tab bar is laid out after the page's scripts measure it (waits up to 10 s)
            sync_api.expect(page.get_by_role("tab", name=tab, exact=True)).to_be_visible(
                timeout=10_000)
        assert page.locator("#portrait").is_visible()
        assert page.locator("#generate").is_visible()
        # the page must fit a phone's width: no horizontal scrolling
        scroll = page.evaluate("() => document.documentElement.scrollWidth")
        assert scroll <= width + 1, f"{name}: the page is {scroll} px wide at {width} px"
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts_dir() / f"ui_{name}_empty.png"), full_page=True)
        assert w.outside() == [], f"{name}: requests left 127.0.0.1: {w.outside()}"
        assert any(urlparse(u).hostname == "127.0.0.1" for u in w.requests)


def test_audio_to_video_in_the_browser(ui_server, watched, astronaut_png, two_second_speech):
    speech, seconds = two_second_speech
    for width, height, name in ((1280, 900, "desktop"), (390, 844, "phone")):
        w = watched(width, height)
        w.open(ui_server)
        page = w.page
        _upload(page, "portrait", astronaut_png)
        # the preview marks the face before anything is rendered
        page.wait_for_function(
            "() => document.querySelector('#face-status').innerText.includes('face found')")
        page.locator("#face-preview img").first.wait_for(state="visible")
        _upload(page, "audio-input", speech)
        page.locator("#audio-input audio, #audio-input [data-testid='waveform-Speech'], "
                     "#audio-input .waveform-container").first.wait_for(state="attached")
        page.locator("#generate").click()
        duration = _result_duration(page)
        assert abs(duration - seconds) <= 1.5 / FPS, (duration, seconds)
        page.locator("#download-video").wait_for(state="visible", timeout=5000)
        page.locator("#download-motion").wait_for(state="visible", timeout=5000)
        assert "frames at 25 fps" in page.locator("#summary").inner_text()
        page.wait_for_timeout(300)
        page.screenshot(path=str(artifacts_dir() / f"ui_{name}_result.png"), full_page=True)
        assert w.outside() == [], f"requests left 127.0.0.1: {w.outside()}"


def test_photo_without_a_face_is_refused_with_a_message(ui_server, watched, faceless_png,
                                                        two_second_speech):
    from echomimic.errors import NoFaceFound

    w = watched(1280, 900)
    w.open(ui_server)
    page = w.page
    _upload(page, "portrait", faceless_png)
    page.wait_for_function(
        "() => document.querySelector('#face-status').innerText.toLowerCase()"
        ".includes('no face found')")
    status = page.locator("#face-status").inner_text()
    assert "no face found in the image" in status.lower()
    _upload(page, "audio-input", two_second_speech[0])
    page.locator("#generate").click()
    toast = page.locator(".toast-body").filter(has_text="no face found").first
    toast.wait_for(state="visible", timeout=60_000)
    text = toast.inner_text()
    assert "Traceback" not in text and "File \"" not in text
    assert NoFaceFound.code and "no face found in the image" in text.lower()
    page.evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_timeout(400)
    page.screenshot(path=str(artifacts_dir() / "ui_desktop_no_face.png"))
    assert page.locator("#result video").count() == 0
    assert w.outside() == [], f"requests left 127.0.0.1: {w.outside()}"
