"""Live sessions: the Stream engine, the session API, WebRTC and RTMP outputs, on 127.0.0.1 only.

The server runs in this process (uvicorn on a thread), so the WebRTC peers of both sides offer
only 127.0.0.1 as ICE host candidate (aioice leaves loopback out on its own) and no STUN or TURN
server is configured. The RTMP test listens with a PyAV subprocess on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("aiortc")
websockets = pytest.importorskip("websockets")

from echomimic.media import iter_audio_chunks  # noqa: E402
from echomimic.speech import synthesize  # noqa: E402
from echomimic.stream import AudioChunk, Event, Stream, VideoFrame  # noqa: E402

from service_harness import free_port, wait_for  # noqa: E402

#: Live sessions keep the wall clock: in a parallel run they have the machine to themselves.
pytestmark = pytest.mark.realtime

SR = 16000


@pytest.fixture(scope="module")
def photo(astronaut_png):
    return astronaut_png.read_bytes()


@pytest.fixture(scope="module")
def speech_pcm() -> np.ndarray:
    """About 10 s of espeak-ng speech with pauses, int16 at 16 kHz."""
    text = ("Good morning. This portrait speaks live, on an ordinary processor. "
            "The sound and the mouth follow one clock. Then it waits, and it speaks again, "
            "for a few more seconds of streaming.")
    audio, _ = synthesize(text, lang="en", rate=150)
    x = np.concatenate([c[0] for c in iter_audio_chunks(audio, sample_rate=SR)])
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


# ------------------------------------------------------------------------------------------------
# the engine (offline clock: as fast as the input allows)
# ------------------------------------------------------------------------------------------------


def test_an_engine_in_its_own_process_gives_the_same_stream(photo, speech_pcm):
    """ProcessStream: the same session in a child process (so sessions side by side do not
    share one interpreter lock); its output equals the in-process engine's, item for item."""
    from echomimic.errors import InvalidOption
    from echomimic.stream.process import ProcessStream

    pcm = np.concatenate([speech_pcm[: 2 * SR], np.zeros(SR // 2, np.int16)])

    def run(cls):
        with cls(photo, realtime=False, crop="face", size=128, fps=25) as s:
            sub = s.subscribe()
            s.push_audio(pcm.tobytes(), SR)
            s.end()
            items = list(sub)
            return items, s.info(), s.stats

    mine, info, stats = run(ProcessStream)
    ref, _, _ = run(Stream)
    frames = [i for i in mine if isinstance(i, VideoFrame)]
    ref_frames = [i for i in ref if isinstance(i, VideoFrame)]
    assert len(frames) == len(ref_frames) >= 60
    for a, b in zip(frames, ref_frames):
        assert a.index == b.index and np.array_equal(a.image, b.image) and a.motion == b.motion
    audio = np.concatenate([i.samples for i in mine if isinstance(i, AudioChunk)])
    ref_audio = np.concatenate([i.samples for i in ref if isinstance(i, AudioChunk)])
    assert np.array_equal(audio, ref_audio)
    assert [e.type for e in mine if isinstance(e, Event)] == \
        [e.type for e in ref if isinstance(e, Event)]
    # the child's figures outlive it
    assert info["state"] == "closed" and stats["frames_sent"] == len(frames)
    # errors of the child's set-up reach the caller as themselves, and leave no process behind
    with pytest.raises(InvalidOption, match="lookahead"):
        ProcessStream(photo, realtime=False, lookahead=0.5)
    import multiprocessing

    assert not [p for p in multiprocessing.active_children() if p.name == "echomimic-stream-engine"]



def test_stream_follows_the_audio_clock_and_closes_the_mouth(photo, speech_pcm):
    pcm = speech_pcm[: 3 * SR]
    pcm = np.concatenate([pcm, np.zeros(SR, np.int16)])          # 1 s of silence after
    with Stream(photo, realtime=False, crop="face", size=256, fps=25) as s:
        sub = s.subscribe()
        for i in range(0, pcm.size, 777):                           # odd chunk sizes
            s.push_audio(pcm[i:i + 777].tobytes(), SR)
        s.end()
        frames, audio, events = [], [], []
        for item in sub:
            (frames if isinstance(item, VideoFrame) else
             audio if isinstance(item, AudioChunk) else events).append(item)
    # video timestamps come from the audio sample count: frame i at i/25 s, no gaps
    assert [f.index for f in frames] == list(range(len(frames)))
    assert audio[0].pts == 0 and all(b.pts == a.pts + a.samples.size for a, b in zip(audio, audio[1:]))
    out = np.concatenate([a.samples for a in audio])
    assert out.size >= pcm.size
    # the audio comes out unchanged (a 16-bit round trip), on the same sample clock; the
    # stream's latency (a frame + the lookahead) is in wall time, not in the timestamps
    assert s.delay == int(0.04 * SR + 0.08 * SR)
    assert np.abs(out[:pcm.size].astype(np.int32) - pcm.astype(np.int32)).max() <= 2
    assert len(frames) >= int(out.size / SR * 25) - 1
    jaw = np.array([f.motion["jawOpen"] for f in frames])
    t = np.array([f.time for f in frames])
    speaking = t < 3.0
    assert jaw[speaking].max() > 0.2, "the mouth never opened during speech"
    # the mouth is closed within 80 ms of the end of the sound
    env = np.abs(pcm.astype(np.float32)) > 300
    last = np.flatnonzero(env)[-1] / SR
    after = t >= last + 0.08
    assert after.any() and jaw[after].max() < 0.02, jaw[after]
    assert all(f.motion["mouthClose"] > 0.9 for f, a in zip(frames, after) if a)
    assert any(e.type == "speaking" for e in events) and events[-1].type == "end"


def test_a_frame_leaves_as_soon_as_its_window_is_complete(photo, speech_pcm):
    """Frame i needs the audio up to the end of its interval plus the lookahead; it is sent at
    the tick that completes that window, right ahead of its own sound (the audio sent before it
    ends exactly at its timestamp), not a tick later."""
    with Stream(photo, realtime=False, crop="face", size=128) as s:
        sub = s.subscribe()
        s.push_audio(speech_pcm[:3 * SR].tobytes(), SR)
        s.end()
        sent_before = []
        audio_out = 0
        for item in sub:
            if isinstance(item, AudioChunk):
                audio_out = item.pts + item.samples.size
            elif isinstance(item, VideoFrame):
                sent_before.append(audio_out - int(round(item.index * SR / 25)))
    assert len(sent_before) >= 70
    assert set(sent_before[3:]) == {0}, sorted(set(sent_before))


def test_a_frame_one_frame_behind_is_sent_late_rather_than_dropped(photo, speech_pcm):
    """A brief stall of the CPU (here: one frame takes 100 ms to render) leaves one frame
    behind its time: it is still rendered and sent (counted in ``frames_behind``), and the
    engine catches up without dropping any frame."""
    with Stream(photo, realtime=True, crop="face", size=128) as s:
        render = s.renderer.render
        calls = []

        def slow_once(m):
            calls.append(1)
            if len(calls) == 15:
                time.sleep(0.1)
            return render(m)

        s.renderer.render = slow_once
        sub = s.subscribe(("video",))
        frames = [sub.get(timeout=10) for _ in range(40)]
        stats = dict(s.stats)
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + 40))
    assert stats["frames_dropped"] == 0, stats
    assert stats["frames_behind"] >= 1, stats


def test_idle_life_goes_on_without_audio(photo):
    with Stream(photo, realtime=True, crop="face", size=256) as s:
        sub = s.subscribe(("video",))
        frames = [sub.get(timeout=10) for _ in range(40)]
    blink = np.array([f.motion["eyeBlinkLeft"] for f in frames])
    yaw = np.array([f.motion["yaw"] for f in frames])
    jaw = np.array([f.motion["jawOpen"] for f in frames])
    assert np.ptp(yaw) > 0 or blink.max() > 0, "no idle motion"
    assert jaw.max() == 0


def test_interrupt_silences_audio_and_mouth(photo, speech_pcm):
    with Stream(photo, realtime=True, crop="face", size=256) as s:
        sub = s.subscribe(("audio", "video", "event"))
        s.push_audio(speech_pcm[: 4 * SR].tobytes(), SR)
        called_at = cut = None
        items = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            it = sub.get(timeout=10)
            items.append(it)
            if isinstance(it, AudioChunk) and it.time > 1.0 and called_at is None:
                s.interrupt()
                called_at = s.out_pos / SR          # the audio clock when interrupt() returns
            if isinstance(it, Event) and it.type == "interrupted":
                cut = it.t
            if cut is not None and isinstance(it, AudioChunk) and it.time > cut + 1.0:
                break
    assert cut is not None, "no interrupted event"
    assert cut - called_at <= 0.1                   # cut within a tick or two of the call
    before = np.concatenate([a.samples for a in items if isinstance(a, AudioChunk) and a.time < cut])
    after = [a for a in items if isinstance(a, AudioChunk) and a.time >= cut]
    assert np.abs(before).max() > 1000                # there was speech to cut
    assert after and max(np.abs(a.samples).max() for a in after) == 0
    frames_after = [f for f in items if isinstance(f, VideoFrame) and f.time >= cut + 0.08]
    assert frames_after and max(f.motion["jawOpen"] for f in frames_after) < 0.02


def test_a_subscriber_that_stops_reading_is_closed_not_buffered(photo):
    with Stream(photo, realtime=True, crop="face", size=128) as s:
        stalled = s.subscribe(maxsize=20)              # never read
        reader = s.subscribe(("video",))
        frames = [reader.get(timeout=10) for _ in range(30)]   # the session goes on
        wait_for(lambda: stalled.overflowed, 10, "the stalled subscriber to be closed")
        assert stalled.q.qsize() <= 21                   # 20 items and the end marker
        assert s.stats["subscribers_closed_slow"] == 1
        assert frames[-1].index > frames[0].index and not s.closed


# ------------------------------------------------------------------------------------------------
# the service: in-process server on 127.0.0.1
# ------------------------------------------------------------------------------------------------


class Server:
    def __init__(self, tmp_path):
        import uvicorn

        from echomimic.service.app import create_app
        from echomimic.service.settings import Settings
        from echomimic.stream.webrtc import restrict_host_addresses

        restrict_host_addresses(["127.0.0.1"])
        self.app = create_app(Settings(data_dir=tmp_path, auth=True, rate_limit=0,
                                       max_active_jobs=3))
        _, self.key_a = self.app.state.store.create_key("alice")
        _, self.key_b = self.app.state.store.create_key("bob")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "the server to start")

    def headers(self, key=None):
        return {"Authorization": f"Bearer {key or self.key_a}"}

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
        from echomimic.stream.webrtc import restrict_host_addresses

        restrict_host_addresses(None)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("stream-service"))
    yield srv
    srv.stop()


def _open(server, photo, key=None, **fields):
    import httpx

    r = httpx.post(f"{server.base}/api/v1/sessions", headers=server.headers(key),
                   files={"image": ("face.png", photo, "image/png")},
                   data={"resolution": "512", **fields}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()


def _close(server, sid, key=None):
    import httpx

    return httpx.delete(f"{server.base}/api/v1/sessions/{sid}", headers=server.headers(key),
                        timeout=30)


def test_sessions_of_another_key_are_invisible(server, photo):
    import httpx

    body = _open(server, photo, size=256)
    sid = body["session_id"]
    assert set(body) == {"session_id", "input_url", "webrtc_url", "rtmp_url"}
    assert body["input_url"].startswith("ws://127.0.0.1:")
    r = httpx.get(f"{server.base}/api/v1/sessions/{sid}", headers=server.headers(server.key_b))
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = httpx.delete(f"{server.base}/api/v1/sessions/{sid}", headers=server.headers(server.key_b))
    assert r.status_code == 404
    r = httpx.get(f"{server.base}/api/v1/sessions/{sid}")
    assert r.status_code == 401

    async def ws_other_key():
        url = f"ws://127.0.0.1:{server.port}/api/v1/sessions/{sid}/input?token={server.key_b}"
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 10)
        return e.value.rcvd

    rcvd = asyncio.run(ws_other_key())
    assert rcvd.code == 4404
    r = httpx.get(f"{server.base}/api/v1/sessions/{sid}", headers=server.headers())
    assert r.status_code == 200 and r.json()["state"] in ("idle", "speaking")
    assert _close(server, sid).status_code == 200
    assert httpx.get(f"{server.base}/api/v1/sessions/{sid}",
                     headers=server.headers()).status_code == 404


def test_sessions_count_against_the_key_limit(server, photo):
    ids = [_open(server, photo, size=128)["session_id"] for _ in range(3)]
    import httpx

    r = httpx.post(f"{server.base}/api/v1/sessions", headers=server.headers(),
                   files={"image": ("face.png", photo, "image/png")}, data={"size": "128"},
                   timeout=60)
    assert r.status_code == 429 and r.json()["code"] == "too_many_jobs"
    for sid in ids:
        _close(server, sid)


@pytest.mark.parametrize("message, code", [
    (b"\x01\x02\x03", 1007),                       # odd byte count: not PCM16
    (b"\x00" * (2 * 48000 * 2 + 2), 1009),         # oversized
    ("not json at all", 1007),
    (json.dumps({"type": "dance"}), 1003),
])
def test_malformed_websocket_messages_close_with_a_code_and_reason(server, photo, message, code):
    sid = _open(server, photo, size=128)["session_id"]

    async def run():
        url = f"ws://127.0.0.1:{server.port}/api/v1/sessions/{sid}/input?rate=16000&token={server.key_a}"
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send(message)
            with pytest.raises(websockets.ConnectionClosed) as e:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
        return e.value.rcvd

    try:
        rcvd = asyncio.run(run())
        assert rcvd.code == code and rcvd.reason
    finally:
        _close(server, sid)


def test_bad_rate_is_refused(server, photo):
    sid = _open(server, photo, size=128)["session_id"]

    async def run():
        url = f"ws://127.0.0.1:{server.port}/api/v1/sessions/{sid}/input?rate=12345&token={server.key_a}"
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 10)
        return e.value.rcvd

    try:
        rcvd = asyncio.run(run())
        assert rcvd.code == 1008 and "rate" in rcvd.reason
    finally:
        _close(server, sid)


async def _webrtc_viewer(server, sid, *, seconds: float, feed=None):
    """A loopback aiortc viewer: returns (video frames, audio samples, codec, first frame)."""
    import httpx
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    got = {"video": 0, "audio": 0, "first": None, "luma": []}
    done = asyncio.Event()

    async def pull(track):
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    got["video"] += 1
                    if got["video"] % 25 == 0:
                        got["luma"].append(float(frame.to_ndarray(format="gray").mean()))
                    if got["first"] is None:
                        got["first"] = frame.to_ndarray(format="rgb24")
                else:
                    got["audio"] += frame.samples * 16000 // frame.sample_rate
        except Exception:
            return

    tasks = []

    @pc.on("track")
    def on_track(track):
        tasks.append(asyncio.ensure_future(pull(track)))

    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"{server.base}/api/v1/sessions/{sid}/webrtc",
                            headers=server.headers(),
                            json={"sdp": pc.localDescription.sdp, "type": "offer"})
        assert r.status_code == 200, r.text
        answer = r.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    if feed is not None:
        await feed()
    await asyncio.sleep(seconds)
    done.set()
    await pc.close()
    for t in tasks:
        t.cancel()
    return got, answer.get("video_codec")


def test_webrtc_viewer_receives_live_video_and_audio(server, photo, speech_pcm, measured):
    """Ten seconds of speech over the WebSocket; the viewer gets >= 240 frames and the sound."""
    sid = _open(server, photo, size=256)["session_id"]
    pcm = speech_pcm[: 10 * SR]
    events: list[dict] = []

    async def feed():
        url = f"ws://127.0.0.1:{server.port}/api/v1/sessions/{sid}/input?rate=16000&token={server.key_a}"
        ws = await websockets.connect(url)

        async def send():
            step = SR // 10                                    # 100 ms chunks, paced
            t0 = time.monotonic()
            for k, i in enumerate(range(0, pcm.size, step)):
                await ws.send(pcm[i:i + step].tobytes())
                await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.1 - time.monotonic()))

        async def recv():
            try:
                async for m in ws:
                    events.append(json.loads(m))
            except websockets.ConnectionClosed:
                pass

        asyncio.ensure_future(send())
        asyncio.ensure_future(recv())

    try:
        got, codec = asyncio.run(_webrtc_viewer(server, sid, seconds=11.5, feed=feed))
        import httpx

        info = httpx.get(f"{server.base}/api/v1/sessions/{sid}", headers=server.headers()).json()
    finally:
        _close(server, sid)
    assert codec == "H264"
    st = info["stats"]
    # audio is never dropped: the viewer hears all ten seconds
    assert got["audio"] >= 9.5 * SR, got["audio"]
    # the frames encoded (once, for every viewer) since this viewer joined reached it, but for
    # those before its first key frame and those in flight at the end
    encoded = info["webrtc"]["shared_h264_packets"]
    assert got["video"] >= encoded - 25, (got["video"], encoded, st)
    # frames: >= 240 in 10 s. On a CPU too busy to render 25 fps (a shared test machine) the
    # session drops frames to keep the audio's clock, so the frame slots it went through count
    measured("webrtc_frames_received", got["video"])
    measured("webrtc_frames_dropped_by_cpu", st["frames_dropped"])
    assert got["video"] + st["frames_dropped"] >= 240, (got["video"], st)
    if st["frames_dropped"] == 0:
        assert got["video"] >= 240, (got["video"], st)
    assert got["first"] is not None and got["first"].mean() > 30   # a picture, not black
    assert any(e["type"] == "speaking" for e in events), events
    assert info["webrtc"]["shared_h264_packets"] > 0


def test_connect_disconnect_cycles_leave_threads_at_baseline(server, photo):
    import httpx

    def cycle():
        sid = _open(server, photo, size=128)["session_id"]

        async def ws_once():
            url = f"ws://127.0.0.1:{server.port}/api/v1/sessions/{sid}/input?token={server.key_a}"
            async with websockets.connect(url) as ws:
                await ws.send(np.zeros(1600, np.int16).tobytes())
                await ws.send(json.dumps({"type": "interrupt"}))

        asyncio.run(ws_once())
        assert _close(server, sid).status_code == 200

    cycle()                                    # warm-up: thread pools reach their size
    time.sleep(0.5)
    base = threading.active_count()
    for _ in range(20):
        cycle()
    wait_for(lambda: threading.active_count() <= base, 10,
             f"threads back to {base} (now {threading.active_count()})")
    r = httpx.get(f"{server.base}/api/v1/sessions/{'0' * 32}", headers=server.headers())
    assert r.status_code == 404


# ------------------------------------------------------------------------------------------------
# RTMP
# ------------------------------------------------------------------------------------------------

LISTENER = r"""
import av, json, sys
c = av.open(sys.argv[1], options={"listen": "1"}, timeout=60)
out = {"streams": sorted(s.type for s in c.streams), "video": [], "audio": []}
try:
    for pk in c.demux():
        if pk.pts is not None:
            out[pk.stream.type].append(float(pk.pts * pk.time_base))
            for f in pk.decode():
                pass
except av.error.FFmpegError:
    pass                       # the pusher hung up
print(json.dumps(out))
"""


def test_rtmp_push_to_a_local_listener(photo, speech_pcm, tmp_path):
    from echomimic.stream.rtmp import RtmpPush

    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/test"
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)                                 # the listener binds
        with Stream(photo, realtime=False, crop="face", size=256) as s:
            push = RtmpPush(s, url)
            s.push_audio(speech_pcm[: 3 * SR].tobytes(), SR)
            s.end()
            wait_for(lambda: not push.running, 120, "the push to finish")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert push.state == "stopped", push.info()
    got = json.loads(out)
    assert got["streams"] == ["audio", "video"]
    v, a = np.array(got["video"]), np.array(got["audio"])
    assert v.size >= 70 and a.size >= 100
    assert np.all(np.diff(v) > 0) and np.all(np.diff(a) > 0)
    assert abs(v[-1] - a[-1]) < 0.3                  # the tracks end together


def test_live_page_is_served_and_loads_nothing_from_elsewhere(server):
    import re

    import httpx

    page = httpx.get(f"{server.base}/live", timeout=10)
    script = httpx.get(f"{server.base}/live.js", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert '<script src="live.js">' in page.text and "<video" in page.text
    for text in (page.text, script.text):
        assert not re.search(r"(src|href)=\"(https?:)?//", text)     # nothing from elsewhere
        assert "stun:" not in text and "turn:" not in text
    assert "iceServers: []" in script.text and '"/api/v1"' in script.text


def test_metrics_export_live_sessions(server, photo):
    import httpx

    sid = _open(server, photo, size=128)["session_id"]
    try:
        text = httpx.get(f"{server.base}/metrics", timeout=10).text
        assert "echomimic_live_sessions 1.0" in text
        assert 'echomimic_live_frames_total{kind="dropped"}' in text
        assert 'echomimic_live_frames_total{kind="behind"}' in text
        assert "echomimic_live_first_frame_latency_seconds_count" in text
    finally:
        _close(server, sid)


def test_cli_stream_plays_an_audio_file_in_real_time(astronaut_png, short_speech, tmp_path):
    from typer.testing import CliRunner

    from echomimic.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["stream", "--image", str(tmp_path / "none.png")])
    assert bad.exit_code == 2 and "not found" in bad.output
    both = runner.invoke(app, ["stream", "--image", str(astronaut_png), "--audio",
                               str(short_speech.path), "--text-stdin", "--size", "128"])
    assert both.exit_code == 2 and "not both" in both.output
    t = time.monotonic()
    res = runner.invoke(app, ["stream", "--image", str(astronaut_png), "--audio",
                              str(short_speech.path), "--size", "128"])
    wall = time.monotonic() - t
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout[res.stdout.index("{"):])
    duration = info["clock_s"]
    assert duration >= 1.0 and wall >= duration          # paced in real time, not faster
    assert info["stats"]["frames_sent"] > 0 and info["state"] == "closed"


def test_an_offer_without_media_is_refused(server, photo):
    import httpx

    sid = _open(server, photo, size=128)["session_id"]
    try:
        r = httpx.post(f"{server.base}/api/v1/sessions/{sid}/webrtc", headers=server.headers(),
                       json={"sdp": "v=0\r\ngarbage\r\n", "type": "offer"}, timeout=10)
        assert r.status_code == 422 and "neither audio nor video" in r.json()["message"]
        r = httpx.post(f"{server.base}/api/v1/sessions/{sid}/webrtc", headers=server.headers(),
                       json={"sdp": "hello", "type": "answer"}, timeout=10)
        assert r.status_code == 422
    finally:
        _close(server, sid)


def test_rtmp_push_through_the_api(server, photo, speech_pcm):
    import httpx

    sid = _open(server, photo, size=128)["session_id"]
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/secretkey"
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)
        api = f"{server.base}/api/v1/sessions/{sid}/rtmp"
        bad = httpx.post(api, headers=server.headers(), json={"url": "file:///etc/passwd"})
        assert bad.status_code == 422
        r = httpx.post(api, headers=server.headers(), json={"url": url}, timeout=10)
        assert r.status_code == 201, r.text
        assert "secretkey" not in r.text                    # the stream key is not shown

        async def speak():
            ws_url = (f"ws://127.0.0.1:{server.port}/api/v1/sessions/{sid}/input"
                      f"?rate=16000&token={server.key_a}")
            async with websockets.connect(ws_url) as ws:
                await ws.send(speech_pcm[: 2 * SR].tobytes())
                await asyncio.sleep(3.0)

        asyncio.run(speak())
        r = httpx.delete(api, headers=server.headers(), timeout=30)
        assert r.status_code == 200 and r.json()["state"] == "stopped", r.text
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        _close(server, sid)
    got = json.loads(out)
    assert got["streams"] == ["audio", "video"]
    a = np.array(got["audio"])
    assert a.size > 50 and np.all(np.diff(a) > 0) and a[-1] >= 2.0
    assert len(got["video"]) > 5 and np.all(np.diff(got["video"]) > 0)


def test_an_idle_session_is_closed_after_the_timeout(server, photo):
    import httpx

    mgr = server.app.state.live_sessions
    idle_s = mgr.idle_s
    mgr.idle_s = 2.0
    try:
        sid = _open(server, photo, size=128)["session_id"]
        url = f"{server.base}/api/v1/sessions/{sid}"
        wait_for(lambda: httpx.get(url, headers=server.headers()).status_code == 404, 20,
                 "the idle session to be closed")
    finally:
        mgr.idle_s = idle_s


@pytest.mark.parametrize("processes", [False, True], ids=["thread-engine", "process-engine"])
def test_end_message_plays_the_queue_then_closes_with_the_events(server, photo, speech_pcm,
                                                                 processes):
    # ECHOMIMIC_STREAM_PROCESSES=on: the session's engine runs in a process of its own
    state = server.app.state
    settings = state.settings
    state.settings = settings.with_(stream_processes=processes)
    try:
        sid = _open(server, photo, size=128)["session_id"]
    finally:
        state.settings = settings
    if processes:
        import multiprocessing

        assert [p for p in multiprocessing.active_children() if p.name == "echomimic-stream-engine"]

    async def run():
        url = f"ws://127.0.0.1:{server.port}/api/v1/sessions/{sid}/input?token={server.key_a}"
        events = []
        async with websockets.connect(url) as ws:
            await ws.send(speech_pcm[: SR].tobytes())
            await ws.send(json.dumps({"type": "end"}))
            try:
                async for m in ws:
                    events.append(json.loads(m))
            except websockets.ConnectionClosed:
                pass
            return events, ws.close_code, ws.close_reason

    try:
        events, code, reason = asyncio.run(run())
    finally:
        _close(server, sid)
    types = [e["type"] for e in events]
    assert code == 1000 and reason == "session ended"
    assert "speaking" in types and types[-1] == "end", types
    assert events[-1]["t"] >= 1.0                       # after the second of audio played
