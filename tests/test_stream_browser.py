"""The live page (``/live``) in a real browser, and memory over connect/disconnect cycles.

The service runs in this process (uvicorn on a thread) with ICE host candidates pinned to
127.0.0.1. Debian's Chromium (``/usr/bin/chromium`` or ``$ECHOMIMIC_CHROMIUM``; nothing is
downloaded) is driven by Playwright with fake media devices and without background networking;
every request that does not go to 127.0.0.1 is aborted and fails the test. The browser test opens
the page, gives the API key and the photo, types a sentence, and checks in the page that the
video element plays pictures that are not black (drawn to a canvas and read back) and that the
WebRTC audio track receives packets.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

pytest.importorskip("aiortc")
websockets = pytest.importorskip("websockets")

from service_harness import find_chromium, free_port, wait_for  # noqa: E402

pytestmark = pytest.mark.realtime

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


CHROMIUM = find_chromium()
#: Chromium with fake camera/microphone, autoplay with sound, loopback ICE candidates (plain IPs,
#: not mDNS names that aioice cannot resolve) and none of its own traffic to the internet.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-domain-reliability", "--no-first-run",
    "--no-default-browser-check", "--metrics-recording-only",
]


class Server:
    def __init__(self, tmp_path: Path):
        import uvicorn

        from echomimic.service.app import create_app
        from echomimic.service.settings import Settings
        from echomimic.stream.webrtc import restrict_host_addresses

        restrict_host_addresses(["127.0.0.1"])
        self.app = create_app(Settings(data_dir=tmp_path, auth=True, rate_limit=0,
                                       max_active_jobs=3))
        _, self.key = self.app.state.store.create_key("browser")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "the server to start")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        from echomimic.stream.webrtc import restrict_host_addresses

        restrict_host_addresses(None)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("live-page"))
    yield srv
    srv.stop()


def test_warp_streams_and_whole_clip_renderers_are_refused(astronaut_png):
    """The warp renderer's ``prepare`` (its body envelope) does not make it a whole-clip renderer;
    the neural ones (``needs_whole_clip``) are refused by a live session."""
    from echomimic.errors import InvalidOption
    from echomimic.render import get_renderer
    from echomimic.stream import Stream

    assert not getattr(get_renderer("warp"), "needs_whole_clip", False)
    assert get_renderer("echomimic-v1").needs_whole_clip
    assert get_renderer("echomimic-v2").needs_whole_clip
    with pytest.raises(InvalidOption, match="whole clip"):
        Stream(astronaut_png.read_bytes(), renderer="echomimic-v1", realtime=False)


def test_a_session_opens_with_the_warp_renderer(server, astronaut_png):
    import httpx

    r = httpx.post(f"{server.base}/api/v1/sessions", headers=server.headers(),
                   files={"image": ("face.png", Path(astronaut_png).read_bytes(), "image/png")},
                   data={"resolution": "512", "size": "128"}, timeout=60)
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    assert httpx.delete(f"{server.base}/api/v1/sessions/{sid}", headers=server.headers(),
                        timeout=30).status_code == 200


# ------------------------------------------------------------------------------------------------
# the page in Chromium
# ------------------------------------------------------------------------------------------------

# In the page: draw the video to a canvas (mean brightness of its pixels) and read the WebRTC
# statistics of the audio and video tracks (``pc`` is the page's peer connection).
PROBE = """async () => {
  const v = document.getElementById('video');
  const out = {ready: v.readyState, time: v.currentTime, paused: v.paused, w: v.videoWidth,
               h: v.videoHeight, mean: 0, audio_packets: 0, audio_bytes: 0, video_frames: 0,
               audio_tracks: v.srcObject ? v.srcObject.getAudioTracks().length : 0};
  if (v.videoWidth > 0) {
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0);
    const px = g.getImageData(0, 0, c.width, c.height).data;
    let s = 0;
    for (let i = 0; i < px.length; i += 4) s += px[i] + px[i + 1] + px[i + 2];
    out.mean = s / (3 * px.length / 4);
    out.png = c.toDataURL('image/png');
  }
  if (typeof pc !== 'undefined' && pc) {
    (await pc.getStats()).forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      if (r.kind === 'audio') { out.audio_packets = r.packetsReceived || 0; out.audio_bytes = r.bytesReceived || 0; }
      if (r.kind === 'video') out.video_frames = r.framesDecoded || 0;
    });
  }
  return out;
}"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium, "
                                             "or set ECHOMIMIC_CHROMIUM)")
def test_live_page_plays_the_avatar_with_sound_in_chromium(server, astronaut_png, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the browser test needs the playwright package")
    outside: list[str] = []

    def route(r) -> None:
        url = r.request.url
        if url.startswith(("data:", "blob:")) or (urlparse(url).hostname or "") in LOOPBACK:
            r.continue_()
        else:
            outside.append(url)
            r.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 900, "height": 900})
            context.route("**/*", route)
            page = context.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{server.base}/live", wait_until="load")
            page.fill("#key", server.key)
            page.set_input_files("#photo", str(astronaut_png))
            page.click("#start")
            try:
                page.wait_for_selector("#say:not([disabled])", timeout=40_000)
            except sync_api.TimeoutError:
                pytest.fail(f"the session did not start: state {page.inner_text('#state')!r}, "
                            f"log {page.inner_text('#log')!r}, page errors {errors}, "
                            f"blocked {outside}")
            page.fill("#text", "Hello there, this is the live avatar speaking to you now.")
            page.press("#text", "Enter")
            deadline = time.monotonic() + 25
            first = last = None
            while time.monotonic() < deadline:
                got = page.evaluate(PROBE)
                if got["mean"] > 30 and first is None:
                    first = got
                last = got
                if (first is not None and got["audio_packets"] > 50 and got["time"] > first["time"]
                        and got["video_frames"] > 25 and "speaking" in page.inner_text("#log")):
                    break
                page.wait_for_timeout(500)
            log = page.inner_text("#log")
            assert last is not None
            png = last.pop("png", None)
            if png:
                import base64

                art = Path(os.environ.get("ECHOMIMIC_TEST_ARTIFACTS")
                           or Path(__file__).resolve().parent / "artifacts")
                art.mkdir(parents=True, exist_ok=True)
                (art / "live_page_frame.png").write_bytes(base64.b64decode(png.split(",", 1)[1]))
                page.screenshot(path=str(art / "live_page.png"))
            if first is not None:
                first.pop("png", None)
            info = json.dumps({"first": first, "last": last, "log": log[-800:], "errors": errors})
            assert first is not None, f"no non-black frame in the video element: {info}"
            assert last["w"] > 0 and last["ready"] >= 2 and not last["paused"], info
            assert last["time"] > first["time"], f"the video does not play: {info}"
            assert last["video_frames"] > 25, info
            assert last["audio_tracks"] == 1 and last["audio_packets"] > 50 and last["audio_bytes"] > 0, info
            assert "speaking" in log, info                           # the sentence was spoken
            page.click("#stop")
            page.wait_for_function("document.getElementById('state').textContent === 'ended'")
            context.close()
        finally:
            browser.close()
    assert outside == [], f"the page or the browser reached beyond 127.0.0.1: {outside}"


# ------------------------------------------------------------------------------------------------
# memory over connect/disconnect cycles
# ------------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_connect_disconnect_cycles_leave_rss_near_baseline(server, astronaut_png):
    """20 sessions opened, fed over the WebSocket and ended: the process's resident memory comes
    back within 50 MB of what it was after the first few."""
    import httpx

    photo = Path(astronaut_png).read_bytes()

    def cycle() -> None:
        r = httpx.post(f"{server.base}/api/v1/sessions", headers=server.headers(),
                       files={"image": ("face.png", photo, "image/png")},
                       data={"resolution": "512", "size": "128"}, timeout=60)
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]

        async def ws_once():
            url = f"ws://127.0.0.1:{server.port}/api/v1/sessions/{sid}/input?token={server.key}"
            async with websockets.connect(url) as ws:
                await ws.send((np.sin(np.arange(3200) / 8) * 8000).astype(np.int16).tobytes())
                await ws.send(json.dumps({"type": "interrupt"}))

        asyncio.run(ws_once())
        d = httpx.delete(f"{server.base}/api/v1/sessions/{sid}", headers=server.headers(), timeout=30)
        assert d.status_code == 200, d.text

    for _ in range(3):                       # warm-up: caches, pools and allocator arenas fill
        cycle()
    gc.collect()
    time.sleep(0.5)
    base = _rss_mb()
    for _ in range(20):
        cycle()
    gc.collect()
    time.sleep(0.5)
    after = _rss_mb()
    assert after <= base + 50, f"RSS grew from {base:.0f} MB to {after:.0f} MB over 20 cycles"
