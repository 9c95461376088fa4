"""Live sessions over HTTP: create, input (WebSocket), WebRTC viewers, RTMP push, end.

* ``POST /api/v1/sessions`` (multipart ``image`` or JSON ``image_url``, plus options such as
  ``resolution``, ``fps``, ``voice``, ``lang``, ``emotion``) -> ``201 {session_id, input_url,
  webrtc_url, rtmp_url}``;
* ``GET`` / ``DELETE /api/v1/sessions/{id}``: state and figures / end it;
* ``WS /api/v1/sessions/{id}/input?rate=16000``: binary PCM16 LE mono at ``rate``; text JSON
  ``{"type": "say", "text", "lang"}``, ``{"type": "interrupt"}``, ``{"type": "end"}``; events
  back as JSON; malformed input closes the socket with a code and a reason;
* ``POST /api/v1/sessions/{id}/webrtc`` ``{"sdp", "type": "offer"}`` -> the answer;
* ``POST`` / ``DELETE /api/v1/sessions/{id}/rtmp`` ``{"url"}``: start / stop a push.

The API key goes in ``Authorization: Bearer``, or for the WebSocket in the ``token`` query
parameter. A key sees only its own sessions; each live session counts as an active job against
the key's ``ECHOMIMIC_MAX_ACTIVE_JOBS``. ``ECHOMIMIC_MAX_SESSIONS`` caps the sessions of the
server (default 4), ``ECHOMIMIC_SESSION_IDLE_S`` closes a session nobody has sent input to or
watched for that long (default 300 s). ``ECHOMIMIC_ICE_SERVERS`` (JSON list of ``{"urls": ...}``)
configures STUN/TURN (none by default) and ``ECHOMIMIC_WEBRTC_HOSTS`` (comma-separated addresses)
pins the ICE host candidates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.websockets import WebSocketDisconnect

from ..errors import EchomimicError, InvalidOption
from .errors import InputTooLarge, NotFound, Unauthorized

log = logging.getLogger("echomimic.service.sessions")

API = "/api/v1"
#: Options a session accepts (the pipeline's names).
SESSION_OPTIONS = ("fps", "crop", "size", "max_side", "seed", "lang", "voice", "rate", "pitch",
                   "volume", "expression_scale", "head_motion_scale", "blink_rate", "emotion",
                   "emotion_intensity", "face_index", "renderer")
#: Largest binary WebSocket message (bytes): 2 s of 48 kHz PCM16.
MAX_WS_BINARY = 2 * 48000 * 2
MAX_WS_TEXT = 8192

# WebSocket close codes (RFC 6455 and application codes 4000-4999)
WS_INVALID_DATA = 1007      # e.g. an odd number of PCM bytes, text that is not JSON
WS_POLICY = 1008            # a bad query parameter
WS_TOO_BIG = 1009           # an oversized message
WS_UNSUPPORTED = 1003       # an unknown message type
WS_UNAUTHORIZED = 4401
WS_NOT_FOUND = 4404

router = APIRouter()

_STATIC = {"live.html": "text/html; charset=utf-8", "live.js": "text/javascript; charset=utf-8"}


@router.get("/live", include_in_schema=False)
def live_page():
    """The live page: pick a photo, open a session, type or speak, watch and hear it."""
    return _static("live.html")


@router.get("/live.js", include_in_schema=False)
def live_script():
    return _static("live.js")


def _static(name: str):
    from importlib import resources

    from fastapi.responses import Response

    data = resources.files("echomimic.stream").joinpath("static", name).read_bytes()
    return Response(data, media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})


class TooManySessions(EchomimicError):
    code = "too_many_sessions"
    http_status = 429


@dataclass
class LiveSession:
    id: str
    owner: str
    stream: Any
    created_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.monotonic)
    webrtc: Any = None
    rtmp: Any = None
    inputs: int = 0


class SessionManager:
    """The live sessions of this server process."""

    def __init__(self, max_sessions: int, idle_s: float):
        self.max_sessions, self.idle_s = int(max_sessions), float(idle_s)
        self.sessions: dict[str, LiveSession] = {}
        self.ended: dict[str, Any] = {}
        self.lock = threading.Lock()

    def count(self, owner: str | None = None) -> int:
        with self.lock:
            return sum(1 for s in self.sessions.values() if owner is None or s.owner == owner)

    def get(self, sid: str, owner: str) -> LiveSession:
        with self.lock:
            s = self.sessions.get(sid) if re.fullmatch(r"[0-9a-f]{32}", sid or "") else None
        if s is None or s.owner != owner:
            raise NotFound(f"no session {sid!r}")
        return s

    async def end(self, s: LiveSession) -> None:
        with self.lock:
            if self.sessions.pop(s.id, None) is not None:
                st = s.stream.stats
                for k in ("frames_sent", "frames_dropped", "frames_late", "frames_behind"):
                    self.ended[k] = self.ended.get(k, 0) + st.get(k, 0)
                self.ended.setdefault("latency", []).extend(st["first_frame_latency_ms"])
                self.ended.setdefault("interrupt", []).extend(st["interrupt_latency_ms"])
                for k in ("latency", "interrupt"):
                    del self.ended[k][:-10000]
        if s.webrtc is not None:
            await s.webrtc.close()
        if s.rtmp is not None:
            await run_in_threadpool(s.rtmp.stop)
        await run_in_threadpool(s.stream.close)

    def start_reaper(self) -> None:
        """Reap every few seconds on the server's event loop (once per loop)."""
        loop = asyncio.get_running_loop()
        if getattr(self, "_reaper_loop", None) is loop:
            return
        self._reaper_loop = loop

        async def run() -> None:
            while self.sessions:
                await asyncio.sleep(min(10.0, max(1.0, self.idle_s / 4)))
                try:
                    await self.reap()
                except Exception:  # keep reaping
                    log.exception("reaping live sessions failed")
            self._reaper_loop = None

        self._reaper = loop.create_task(run())

    async def reap(self) -> None:
        """End sessions whose stream finished, or idle (no input, no viewer) too long."""
        now = time.monotonic()
        with self.lock:
            items = list(self.sessions.values())
        for s in items:
            watched = (s.webrtc is not None and s.webrtc.pcs) or (s.rtmp is not None and s.rtmp.running)
            if watched or s.inputs:
                s.last_active = now
            if s.stream.closed or now - s.last_active > self.idle_s:
                await self.end(s)


class SessionMetrics:
    """Prometheus figures of the live sessions: how many, frames sent / dropped / late (totals
    over ended and running sessions), first-frame and interrupt latency (summaries)."""

    def __init__(self, mgr: SessionManager):
        self.mgr = mgr

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        with self.mgr.lock:
            streams = [s.stream for s in self.mgr.sessions.values()]
            totals = dict(self.mgr.ended)
        lat, intr = list(totals.pop("latency", [])), list(totals.pop("interrupt", []))
        for st in streams:
            stats = st.stats
            for k in ("frames_sent", "frames_dropped", "frames_late", "frames_behind"):
                totals[k] = totals.get(k, 0) + stats.get(k, 0)
            lat += stats["first_frame_latency_ms"]
            intr += stats["interrupt_latency_ms"]
        yield GaugeMetricFamily("echomimic_live_sessions", "Live sessions open",
                                value=len(streams))
        frames = CounterMetricFamily("echomimic_live_frames", "Frames of live sessions",
                                     labels=["kind"])
        for k in ("sent", "dropped", "late", "behind"):
            frames.add_metric([k], totals.get(f"frames_{k}", 0))
        yield frames
        for name, values, what in (("first_frame_latency", lat, "first audio chunk to its first frame"),
                                   ("interrupt_latency", intr, "interrupt to the first silent frame")):
            yield SummaryMetricFamily(f"echomimic_live_{name}_seconds", f"Live sessions: {what}",
                                      count_value=len(values),
                                      sum_value=sum(values) / 1000.0)


def attach(app) -> None:
    """Add the live-session routes and metrics to the service's app."""
    app.include_router(router)
    registry = getattr(app.state, "metrics_registry", None)
    if registry is not None:
        registry.register(SessionMetrics(manager(app)))


def manager(app) -> SessionManager:
    m = getattr(app.state, "live_sessions", None)
    if m is None:
        m = SessionManager(int(os.environ.get("ECHOMIMIC_MAX_SESSIONS", "4")),
                           float(os.environ.get("ECHOMIMIC_SESSION_IDLE_S", "300")))
        app.state.live_sessions = m
        hosts = os.environ.get("ECHOMIMIC_WEBRTC_HOSTS", "").strip()
        if hosts:
            from ..stream.webrtc import restrict_host_addresses

            restrict_host_addresses([h.strip() for h in hosts.split(",") if h.strip()])
    return m


def _ice_servers() -> list[dict]:
    raw = os.environ.get("ECHOMIMIC_ICE_SERVERS", "").strip()
    if not raw:
        return []
    servers = json.loads(raw)
    if not isinstance(servers, list):
        raise ValueError("ECHOMIMIC_ICE_SERVERS must be a JSON list")
    return servers


def _who(app, token: str | None) -> str:
    """The key id of a bearer secret (``local`` with authentication off)."""
    settings = app.state.settings
    if not settings.auth:
        return "local"
    if not token:
        raise Unauthorized("an API key is required: Authorization: Bearer <key>")
    key = app.state.store.verify_key(token.strip())
    if key is None:
        raise Unauthorized("the API key is unknown or revoked")
    return key.id


def _bearer(headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def owner(request: Request) -> str:
    return _who(request.app, _bearer(request.headers))


def _urls(request: Request, sid: str) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    ws = "wss" if base.startswith("https") else "ws"
    host = base.split("://", 1)[1]
    return {"session_id": sid,
            "input_url": f"{ws}://{host}{API}/sessions/{sid}/input?rate=16000",
            "webrtc_url": f"{base}{API}/sessions/{sid}/webrtc",
            "rtmp_url": f"{base}{API}/sessions/{sid}/rtmp"}


def session_options(fields_in: dict[str, Any]) -> dict[str, Any]:
    """The stream's options from the request fields (the REST API's names and ``resolution``)."""
    from .app import OPTION_FIELDS, RESOLUTIONS, _coerce

    options: dict[str, Any] = {}
    for key, value in fields_in.items():
        if key in ("image_url", "resolution"):
            continue
        if key not in SESSION_OPTIONS:
            raise InvalidOption(f"unknown field {key!r} for a session")
        if key in OPTION_FIELDS:
            options[key] = _coerce(key, value)
    res = fields_in.get("resolution")
    if res in (None, ""):
        res = "512"                     # live sessions default to a 512 face crop
    res = str(res).strip().lower()
    if res not in RESOLUTIONS:
        raise InvalidOption(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {res!r}")
    for k, v in RESOLUTIONS[res].items():
        options.setdefault(k, v)
    return options


def info_json(s: LiveSession, request: Request | None = None) -> dict[str, Any]:
    body = {"session_id": s.id, "created_at": s.created_at, **s.stream.info(),
            "webrtc": s.webrtc.info() if s.webrtc is not None else {"viewers": 0},
            "rtmp": s.rtmp.info() if s.rtmp is not None else None}
    if request is not None:
        body.update({k: v for k, v in _urls(request, s.id).items() if k != "session_id"})
    return body


@router.post(f"{API}/sessions", status_code=201, summary="Open a live session")
async def create_session(request: Request):
    from ..media import load_image
    from ..stream import ProcessStream, Stream
    from .app import json_object
    from .limits import TooManyJobs
    from .urls import AllowList, fetch

    app = request.app
    who = owner(request)
    settings = app.state.settings
    mgr = manager(app)
    await mgr.reap()
    limit = int(settings.max_active_jobs)
    if limit > 0:
        active = mgr.count(who) + await run_in_threadpool(app.state.store.count_active, who)
        if active >= limit:
            raise TooManyJobs(f"{active} jobs and sessions of this key are active, the most "
                              f"allowed is {limit}; end one first")
    if mgr.count() >= mgr.max_sessions:
        raise TooManySessions(f"this server already runs {mgr.max_sessions} live sessions")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields_in: dict[str, Any] = {}
    image: bytes | None = None
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=50)
        try:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key != "image":
                        raise InvalidOption(f"unexpected file field {key!r}; the photo goes in "
                                            f"'image'")
                    image = await value.read(settings.max_image_bytes + 1)
                    if len(image) > settings.max_image_bytes:
                        raise InputTooLarge(f"the image is over the limit of "
                                            f"{settings.max_image_bytes} bytes")
                else:
                    fields_in[key] = value
        finally:
            await form.close()
    elif ctype == "application/json":
        fields_in = await json_object(request)
    else:
        return JSONResponse({"code": "unsupported_media_type",
                             "message": "send multipart/form-data or application/json"},
                            status_code=415)
    url = fields_in.get("image_url")
    if image is not None and url:
        raise InvalidOption("give either the image file or image_url, not both")
    if image is None and not url:
        raise InvalidOption("the image (portrait photo) is missing: upload 'image' or give "
                            "image_url")
    options = session_options(fields_in)

    def open_stream():
        data = image if image is not None else fetch(
            str(url), max_bytes=settings.max_image_bytes, timeout=settings.url_timeout,
            allow=AllowList(settings.url_allow))
        rgb, digest = load_image(data, max_pixels=settings.max_pixels)
        engine = ProcessStream if settings.stream_processes else Stream
        return engine((rgb, digest), realtime=True, **options)

    stream = await run_in_threadpool(open_stream)
    sid = uuid.uuid4().hex
    s = LiveSession(sid, who, stream)
    with mgr.lock:
        mgr.sessions[sid] = s
    mgr.start_reaper()            # closes finished and idle sessions (ECHOMIMIC_SESSION_IDLE_S)
    return JSONResponse(_urls(request, sid), status_code=201,
                        headers={"Location": f"{API}/sessions/{sid}"})


@router.get(f"{API}/sessions/{{sid}}", summary="A live session's state and figures")
async def get_session(sid: str, request: Request):
    s = manager(request.app).get(sid, owner(request))
    return info_json(s, request)


@router.delete(f"{API}/sessions/{{sid}}", summary="End a live session")
async def delete_session(sid: str, request: Request):
    mgr = manager(request.app)
    s = mgr.get(sid, owner(request))
    body = info_json(s)
    await mgr.end(s)
    body["state"] = "closed"
    return body


async def _json_body(request: Request) -> dict[str, Any]:
    from .app import json_object

    return await json_object(request)


@router.post(f"{API}/sessions/{{sid}}/webrtc", summary="Watch a session: SDP offer -> answer")
async def webrtc_offer(sid: str, request: Request):
    from ..stream.webrtc import WebRtcOutput

    s = manager(request.app).get(sid, owner(request))
    body = await _json_body(request)
    sdp, kind = body.get("sdp"), body.get("type", "offer")
    if kind != "offer" or not isinstance(sdp, str) or not sdp.startswith("v=") \
            or len(sdp) > 100_000:
        raise InvalidOption("send {\"sdp\": <an SDP offer>, \"type\": \"offer\"}")
    if s.webrtc is None:
        s.webrtc = WebRtcOutput(s.stream, ice_servers=_ice_servers())
    try:
        answer = await s.webrtc.answer(sdp, kind)
    except Exception as exc:      # aiortc's SDP parser and negotiation raise many kinds
        log.info("SDP offer refused: %r", exc)
        raise InvalidOption(f"the SDP offer was refused: {str(exc)[:200] or type(exc).__name__}"
                            ) from None
    s.last_active = time.monotonic()
    return answer


@router.post(f"{API}/sessions/{{sid}}/rtmp", summary="Push a session to an RTMP server")
async def rtmp_start(sid: str, request: Request):
    from ..stream.rtmp import RtmpPush, check_url

    s = manager(request.app).get(sid, owner(request))
    body = await _json_body(request)
    url = check_url(body.get("url"))
    if s.rtmp is not None and s.rtmp.running:
        raise InvalidOption("this session already pushes to an RTMP server; DELETE it first")
    s.rtmp = RtmpPush(s.stream, url)
    return JSONResponse(s.rtmp.info(), status_code=201)


@router.delete(f"{API}/sessions/{{sid}}/rtmp", summary="Stop the RTMP push")
async def rtmp_stop(sid: str, request: Request):
    s = manager(request.app).get(sid, owner(request))
    if s.rtmp is None:
        raise NotFound("this session has no RTMP push")
    await run_in_threadpool(s.rtmp.stop)
    return s.rtmp.info()


@router.websocket(f"{API}/sessions/{{sid}}/input")
async def session_input(ws: WebSocket, sid: str):
    from ..stream.session import INPUT_RATES, StreamClosed

    await ws.accept()
    try:
        who = await run_in_threadpool(_who, ws.app, _bearer(ws.headers) or ws.query_params.get("token"))
        s = manager(ws.app).get(sid, who)
    except Unauthorized as exc:
        await ws.close(WS_UNAUTHORIZED, exc.message[:120])
        return
    except NotFound as exc:
        await ws.close(WS_NOT_FOUND, exc.message[:120])
        return
    raw_rate = ws.query_params.get("rate", "16000")
    if not raw_rate.isdigit() or int(raw_rate) not in INPUT_RATES:
        await ws.close(WS_POLICY, f"rate must be one of {', '.join(map(str, INPUT_RATES))}")
        return
    rate = int(raw_rate)
    stream = s.stream
    events = stream.subscribe(("event",), maxsize=200, loop=asyncio.get_running_loop())
    s.inputs += 1

    async def forward_events() -> None:
        while True:
            ev = await events.aget()
            if ev is None:
                return
            await ws.send_json(ev.json())

    forward = asyncio.create_task(forward_events())
    code, reason, ended = 1000, "session ended", False
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                code = None
                break
            s.last_active = time.monotonic()
            if msg.get("bytes") is not None:
                data = msg["bytes"]
                if len(data) > MAX_WS_BINARY:
                    code, reason = WS_TOO_BIG, f"audio messages are at most {MAX_WS_BINARY} bytes"
                    break
                if len(data) % 2:
                    code, reason = WS_INVALID_DATA, "audio must be PCM16 little-endian mono (an even number of bytes)"
                    break
                try:
                    await run_in_threadpool(stream.push_audio, data, rate, timeout=10.0)
                except StreamClosed:
                    break
                except EchomimicError as exc:
                    await ws.send_json({"type": "error", "code": exc.code, "message": exc.message})
                continue
            text = msg.get("text")
            if text is None:
                continue
            if len(text) > MAX_WS_TEXT:
                code, reason = WS_TOO_BIG, f"text messages are at most {MAX_WS_TEXT} characters"
                break
            try:
                m = json.loads(text)
            except ValueError:
                code, reason = WS_INVALID_DATA, "text messages must be JSON"
                break
            kind = m.get("type") if isinstance(m, dict) else None
            if kind == "say":
                try:
                    await run_in_threadpool(stream.say, m.get("text"), lang=m.get("lang"),
                                            voice=m.get("voice"))
                except StreamClosed:
                    break
                except EchomimicError as exc:
                    await ws.send_json({"type": "error", "code": exc.code, "message": exc.message})
            elif kind == "interrupt":
                stream.interrupt()
            elif kind == "end":
                stream.end()
                code, reason, ended = 1000, "session ended", True
                break
            else:
                code, reason = WS_UNSUPPORTED, "unknown message type; use say, interrupt or end"
                break
    except WebSocketDisconnect:
        code = None
    finally:
        s.inputs -= 1
        if ended:                 # the events up to the session's "end" are still sent
            try:
                await asyncio.wait_for(asyncio.shield(forward), 40.0)
            except (asyncio.TimeoutError, Exception):
                pass
        events.close()
        forward.cancel()
        try:
            await forward
        except (asyncio.CancelledError, Exception):
            pass
    if code is not None:
        try:
            await ws.close(code, reason[:120])
        except RuntimeError:
            pass


__all__ = ["attach", "router", "SessionManager", "SessionMetrics", "session_options"]
