"""The REST API (FastAPI): submit, follow, download and cancel jobs.

``create_app(settings)`` builds the app; workers run the jobs (``echomimic serve`` starts both).
Every error answers ``{"code": ..., "message": ...}`` with the error's HTTP status. The OpenAPI
description is published at ``/openapi.json`` (and ``/docs``).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.datastructures import UploadFile
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import AudioTooLong, EchomimicError, InvalidOption
from ..media.writer import MEDIA_TYPES
from ..options import AnimateOptions, coerce, json_schema, options_for
from ..safety.moderation import moderate
from .errors import InputTooLarge, NotFound, NotReady, Unauthorized, UnsupportedMediaType
from .settings import Settings
from .retention import attach as attach_retention
from .signing import result_url as signed_result_url
from .signing import signer_of
from .storage import INPUT_NAMES, LocalStorage, S3Storage, make_storage
from .limits import SubmissionLimits
from .queue import JobQueue, QueueMetrics
from .store import COMPLETED, Job, JobStore
from .urls import AllowList, fetch
from .experiments import ExperimentMetrics, Experiments, add_model_routes
from .graphql import mount_graphql
from .models import BUILTIN, resolve as resolve_model

log = logging.getLogger("echomimic.service")

API = "/api/v1"
#: the options a client may set, from the option table (limits and server paths are the server's)
OPTION_FIELDS = {o.name: o for o in options_for("rest")}
SERVER_ONLY = {f.name for f in fields(AnimateOptions)} - set(OPTION_FIELDS)
TEXT_FIELDS = {"text": 5000, "transcript": 20000, "prompt": 2000}
RESOLUTIONS = {"512": {"crop": "face", "size": 512}, "720p": {"max_side": 1280},
               "1080p": {"max_side": 1920}, "original": {"max_side": 0}}
RESOLUTIONS.update({"2160p": {"max_side": 3840}, "4k": {"max_side": 3840}})
MODES = ("audio", "text", "video")
#: The modes' documented names; ``audio`` and ``video`` stay as aliases (``video`` with speech
#: is ``mixed``).
SEED_MODES = ("audio_only", "video_only", "mixed", "text")
_IDEMPOTENCY = re.compile(r"^[\x21-\x7e]{1,200}$")


# ------------------------------------------------------------------------------------------------
# request parsing and input checks
# ------------------------------------------------------------------------------------------------


def _coerce(name: str, value: Any) -> Any:
    """A form string (or JSON value) converted to the option's type (see the option table)."""
    return coerce(OPTION_FIELDS[name], value)


def build_params(fields_in: dict[str, Any], has: set[str]) -> dict[str, Any]:
    """The job's parameters from the request fields (``has``: the inputs that were given)."""
    params: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in fields_in.items():
        if key in OPTION_FIELDS:
            options[key] = _coerce(key, value)
        elif key in TEXT_FIELDS:
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidOption(f"{key} must be a string")
            if len(value) > TEXT_FIELDS[key]:
                raise InvalidOption(f"{key} is longer than {TEXT_FIELDS[key]} characters")
            params[key] = value
        elif key == "model_version":
            if value not in (None, ""):
                params[key] = str(value)
        elif key not in ("mode", "resolution") and not key.endswith("_url"):
            raise InvalidOption(f"unknown field {key!r}")
    resolution = fields_in.get("resolution")
    if resolution not in (None, ""):
        res = str(resolution).strip().lower()
        if res not in RESOLUTIONS:
            raise InvalidOption(f"resolution must be one of {', '.join(RESOLUTIONS)}, "
                                f"got {resolution!r}")
        for k, v in RESOLUTIONS[res].items():
            options.setdefault(k, v)
    drivers = {d for d in ("audio", "video") if d in has} | ({"text"} if "text" in params else set())
    mode = fields_in.get("mode")
    if mode in (None, ""):
        mode = "video" if "video" in drivers else ("text" if "text" in drivers else "audio")
    if mode in SEED_MODES:
        mode = seed_mode(mode, drivers)
    elif mode not in MODES:
        raise InvalidOption(f"mode must be one of {', '.join(SEED_MODES + ('audio', 'video'))}, "
                            f"got {mode!r}")
    if mode not in drivers:
        raise InvalidOption(f"mode {mode!r} needs the {mode} input" if mode != "text"
                            else "mode 'text' needs the text field")
    if "audio" in has and "text" in params:
        raise InvalidOption("give either audio or text, not both")
    if not drivers:
        raise InvalidOption("nothing drives the portrait: give audio, text or a video")
    if "image" not in has:
        raise InvalidOption("the image (portrait photo) is missing: upload 'image' or give image_url")
    AnimateOptions.from_kwargs(**options)            # raises InvalidOption with the reason
    params["mode"] = mode
    params["options"] = options
    return params


def seed_mode(mode: str, drivers: set[str]) -> str:
    """Check the inputs of a mode given by its documented name; returns the driver it needs.

    ``audio_only``: speech audio, no video; ``video_only``: a video and no speech; ``mixed``:
    the lips from the audio, the rest from the video (both needed); ``text``: text to speak.
    """
    if mode == "mixed":
        missing = [d for d in ("audio", "video") if d not in drivers]
        if missing:
            raise InvalidOption(f"mode 'mixed' takes the lips from the audio and the rest from "
                                f"the video: give both (missing: {' and '.join(missing)})")
        return "video"
    if mode == "audio_only":
        if "video" in drivers:
            raise InvalidOption("mode 'audio_only' takes no video; use mode 'mixed' for lips "
                                "from the audio and the rest from the video")
        if "audio" not in drivers:
            raise InvalidOption("mode 'audio_only' needs the audio input (audio or audio_url)")
        return "audio"
    if mode == "video_only":
        if drivers & {"audio", "text"}:
            raise InvalidOption("mode 'video_only' takes no audio or text; use mode 'mixed' for "
                                "lips from the audio and the rest from the video")
        if "video" not in drivers:
            raise InvalidOption("mode 'video_only' needs the video input (video or video_url)")
        return "video"
    return mode


def check_inputs(data: dict[str, bytes], params: dict[str, Any], settings: Settings) -> None:
    """Moderate the job (``ContentRefused``), then decode every input and find the face, so
    that a job is only queued when it can run."""
    from ..analysis import analyze_cached
    from ..media import load_audio, load_image, probe_video

    moderate(image=data.get("image"), audio=data.get("audio"), video=data.get("video"),
             text=params.get("text"), transcript=params.get("transcript"),
             prompt=params.get("prompt"))

    rgb, digest = load_image(data["image"], max_pixels=settings.max_pixels)
    analyze_cached(rgb, content_hash=digest,
                   face_index=int(params["options"].get("face_index", 0)))
    if "audio" in data:
        load_audio(data["audio"], sample_rate=16000, max_duration=settings.max_audio_seconds)
    if "pose" in data:                    # JSON/NPZ only: pickles are refused by the loader
        from ..motion.body_pose import load_pose_sequence

        load_pose_sequence(data["pose"])
    if "video" in data:
        info = probe_video(data["video"])
        if float(info.get("duration") or 0.0) > settings.max_audio_seconds:
            raise AudioTooLong(f"the video lasts {info['duration']:.0f} s, over the limit of "
                               f"{settings.max_audio_seconds:.0f} s")
    if "persona" in data:                    # a .persona file: parsed and checked in full
        from ..persona import persona_from_bytes

        persona_from_bytes(data["persona"])


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object (``InvalidOption`` otherwise)."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidOption("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidOption("the request body must be a JSON object")
    return body


def _limit(settings: Settings, name: str) -> int:
    from ..motion.body_pose import MAX_POSE_BYTES
    from ..persona import PERSONA_LIMITS

    return {"image": settings.max_image_bytes, "audio": settings.max_audio_bytes,
            "video": settings.max_video_bytes, "pose": MAX_POSE_BYTES,
            "persona": PERSONA_LIMITS["file_bytes"]}[name]


# ------------------------------------------------------------------------------------------------
# responses
# ------------------------------------------------------------------------------------------------


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def task_json(job: Job, request: Request) -> dict[str, Any]:
    """The public view of a job."""
    error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
    result_url = signed_result_url(job, request) if job.status == COMPLETED else None
    return {"task_id": job.id, "status": job.status, "progress": round(job.progress, 4),
            "stage": job.stage or None, "eta_s": job.eta_s, "error": error,
            "result_url": result_url, "result": job.summary or None, "attempts": job.attempts,
            "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at),
            "renderer": job.params.get("options", {}).get("renderer", "warp"),
            "model_version": job.params.get("model_version"),
            "experiment": job.params.get("experiment")}


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def _openapi_body() -> dict[str, Any]:
    props: dict[str, Any] = {name: json_schema(opt) for name, opt in OPTION_FIELDS.items()}
    for name in TEXT_FIELDS:
        props[name] = {"type": "string", "maxLength": TEXT_FIELDS[name]}
    props["mode"] = {"type": "string", "enum": list(SEED_MODES) + ["audio", "video"]}
    props["model_version"] = {"type": "string", "description": "a version of the renderer "
                              "(GET /api/v1/models); default: its newest"}
    props["resolution"] = {"type": "string", "enum": list(RESOLUTIONS)}
    json_props = dict(props)
    form_props = dict(props)
    for name in INPUT_NAMES:
        json_props[f"{name}_url"] = {"type": "string", "format": "uri"}
        form_props[f"{name}_url"] = {"type": "string", "format": "uri"}
        form_props[name] = {"type": "string", "format": "binary"}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "properties": json_props}},
        "multipart/form-data": {"schema": {"type": "object", "properties": form_props}}}}}


# ------------------------------------------------------------------------------------------------
# submission: the one path of REST and GraphQL
# ------------------------------------------------------------------------------------------------


async def submit_job(state: Any, who: str, idem: str | None,
                     read: Callable[[], Awaitable[tuple[dict[str, Any], dict[str, bytes]]]]
                     ) -> tuple[Job, bool]:
    """Accept a job: the one submission path of every front (REST ``POST /generate`` and the
    GraphQL ``generate`` mutation).

    ``state`` holds the app's settings, store, storage, queue, limits and URL allow list;
    ``read()`` gives the request's fields (options, texts, ``*_url``) and uploaded files. In
    order: an ``Idempotency-Key`` already used answers its task; the per-key limits; the fields
    (same names and checks for every front); the experiment's variant and the model version;
    inputs downloaded, decoded and the face found; then the job is stored and published.
    Returns ``(job, created)``.
    """
    settings, store, storage = state.settings, state.store, state.storage
    if idem is not None:
        if not _IDEMPOTENCY.match(idem):
            raise InvalidOption("Idempotency-Key must be 1-200 visible ASCII characters")
        existing = store.find_idempotent(who, idem)
        if existing is not None:
            return existing, False
    await run_in_threadpool(state.limits.check, who)     # 429 rate_limited / too_many_jobs
    fields_in, uploads = await read()
    for name in INPUT_NAMES:
        if name in fields_in and f"{name}_url" not in fields_in:
            raise InvalidOption(f"{name} must be an uploaded file (multipart) or {name}_url")
        if name in uploads and fields_in.get(f"{name}_url"):
            raise InvalidOption(f"give either the {name} file or {name}_url, not both")
    urls = {n: str(fields_in[f"{n}_url"]) for n in INPUT_NAMES if fields_in.get(f"{n}_url")}
    params = build_params(fields_in, set(uploads) | set(urls))
    job_id = uuid.uuid4().hex
    params = state.experiments.route(params, owner=who, job_id=job_id)
    _resolve_model(params, settings)

    def prepare() -> dict[str, bytes]:
        data = dict(uploads)
        for name, url in urls.items():
            data[name] = fetch(url, max_bytes=_limit(settings, name),
                               timeout=settings.url_timeout, allow=state.allow)
        check_inputs(data, params, settings)
        return data

    data = await run_in_threadpool(prepare)

    def save() -> tuple[Job, bool]:
        inputs = {name: storage.save_input(job_id, name, blob) for name, blob in data.items()}
        job, created = store.create_job(who, params, inputs, job_id=job_id,
                                        idempotency_key=idem)
        if not created:
            storage.delete_job(job_id)
        else:
            if params.get("experiment"):
                state.experiments.record(job.id, params["experiment"]["name"],
                                         params["experiment"]["variant"])
            state.queue.publish(job.id)                 # a lost message is published again
        return job, created

    job, created = await run_in_threadpool(save)
    if created:
        state.submitted.inc()
    return job, created


def _resolve_model(params: dict[str, Any], settings: Settings) -> None:
    """Check the job's renderer and ``model_version`` and give it the version's weights."""
    options = params["options"]
    renderer = options.get("renderer", "warp")
    version = params.get("model_version")
    if renderer == "warp" and version in (None, "", BUILTIN):
        if version:
            params["model_version"] = BUILTIN
        return
    chosen = resolve_model(settings, renderer, version, accelerated=bool(options.get("accelerated")))
    params["model_version"] = chosen.version
    if chosen.weights:
        options["weights"] = chosen.weights


# ------------------------------------------------------------------------------------------------
# the app
# ------------------------------------------------------------------------------------------------


def create_app(settings: Settings | None = None, *, store: JobStore | None = None,
               storage: LocalStorage | S3Storage | None = None,
               queue: JobQueue | None = None) -> FastAPI:
    """The FastAPI app. ``store``, ``storage`` and ``queue`` (the Celery queue the jobs are
    published to) default to the ones ``settings`` names."""
    settings = settings or Settings.from_env()
    storage = storage or make_storage(settings)
    store = store or JobStore(settings.database_url, max_attempts=settings.max_attempts)
    queue = queue or JobQueue(settings, store=store, storage=storage)
    limits = SubmissionLimits(store, per_minute=settings.rate_limit,
                              max_active=settings.max_active_jobs)
    allow = AllowList(settings.url_allow)
    if not settings.auth:
        log.warning("authentication is off (ECHOMIMIC_AUTH=off): anyone who can reach this "
                    "server can submit and read every job; use it only on a private machine")

    app = FastAPI(title="echomimic", version=__version__,
                  description="Talking portraits: a photo and speech become an mp4.")
    app.state.settings, app.state.store, app.state.storage = settings, store, storage
    attach_retention(app, store, storage, settings)   # periodic clean-up of old jobs
    app.state.queue, app.state.limits = queue, limits
    app.state.allow, app.state.owner = allow, None
    experiments = Experiments(store)
    if settings_file := os.environ.get("ECHOMIMIC_EXPERIMENTS", "").strip():
        experiments.load_file(settings_file)
    app.state.experiments = experiments

    registry = CollectorRegistry()
    requests_total = Counter("echomimic_http_requests_total", "HTTP requests",
                             ["method", "route", "status"], registry=registry)
    submitted = Counter("echomimic_jobs_submitted_total", "Jobs accepted", registry=registry)
    app.state.submitted = submitted

    class JobsCollector:
        def collect(self):
            g = GaugeMetricFamily("echomimic_jobs", "Jobs in the store by status", labels=["status"])
            counts = store.count_by_status()
            for status in ("queued", "running", "completed", "failed", "cancelled"):
                g.add_metric([status], counts.get(status, 0))
            yield g

    registry.register(JobsCollector())
    registry.register(QueueMetrics(store, queue))     # queue depth, run time, real-time factor
    registry.register(ExperimentMetrics(experiments))  # per-variant counts and quality figures
    app.state.metrics_registry = registry

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        requests_total.labels(request.method, getattr(route, "path", "other"),
                              str(response.status_code)).inc()
        return response

    @app.exception_handler(EchomimicError)
    async def _user_error(_request: Request, exc: EchomimicError):
        headers = ({"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized)
                   else getattr(exc, "headers", None))      # e.g. Retry-After of rate_limited
        return _error(exc.http_status, exc.code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request",
                 413: "input_too_large"}
        return _error(exc.status_code, codes.get(exc.status_code, f"http_{exc.status_code}"),
                      str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    async def _database_busy(_request: Request, exc: OperationalError):
        # e.g. SQLite's "database is locked" when another process holds the write lock past the
        # busy timeout: the request did nothing and can be retried
        log.warning("database unavailable: %s", str(exc.orig or exc).splitlines()[0])
        return _error(503, "database_busy", "the job database is busy; retry in a moment",
                      {"Retry-After": "2"})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_input", f"{where}: {first.get('msg', 'invalid request')}")

    def owner(request: Request) -> str:
        """The caller's identity: the API key's id (or ``local`` when authentication is off)."""
        if not settings.auth:
            return "local"
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("an API key is required: Authorization: Bearer <key>")
        key = store.verify_key(token.strip())
        if key is None:
            raise Unauthorized("the API key is unknown or revoked")
        return key.id

    app.state.owner = owner

    def _get(task_id: str, who: str) -> Job:
        job = store.get(task_id, owner=who) if re.fullmatch(r"[0-9a-f]{32}", task_id) else None
        if job is None:
            raise NotFound(f"no task {task_id!r}")
        return job

    def _accepted(job: Job, request: Request) -> JSONResponse:
        body = task_json(job, request)
        url = str(request.url_for("get_task", task_id=job.id))
        return JSONResponse(body, status_code=202, headers={"Location": url})

    @app.post(f"{API}/generate", status_code=202, openapi_extra=_openapi_body(),
              summary="Submit a job (multipart uploads or JSON with *_url inputs)")
    async def generate(request: Request, who: str = Depends(owner)):
        async def read() -> tuple[dict[str, Any], dict[str, bytes]]:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            total_limit = sum(_limit(settings, name) for name in INPUT_NAMES)
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > total_limit + 1024 * 1024:
                raise InputTooLarge(f"the request is {int(length)} bytes, over the limit")
            fields_in: dict[str, Any] = {}
            uploads: dict[str, bytes] = {}
            if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
                form = await request.form(max_files=len(INPUT_NAMES), max_fields=100)
                try:
                    for key, value in form.multi_items():
                        if isinstance(value, UploadFile):
                            if key not in INPUT_NAMES:
                                raise InvalidOption(f"unexpected file field {key!r}; files go in "
                                                    f"{', '.join(INPUT_NAMES)}")
                            if value.size is not None and value.size > _limit(settings, key):
                                raise InputTooLarge(f"the {key} is {value.size} bytes, over the "
                                                    f"limit of {_limit(settings, key)} bytes")
                            uploads[key] = await value.read()
                        else:
                            fields_in[key] = value
                finally:
                    await form.close()
            elif ctype == "application/json":
                fields_in = await json_object(request)
            else:
                raise UnsupportedMediaType("send multipart/form-data (uploads) or "
                                           "application/json (URLs)")
            return fields_in, uploads

        job, _created = await submit_job(request.app.state, who,
                                         request.headers.get("idempotency-key"), read)
        return _accepted(job, request)

    @app.get(f"{API}/task/{{task_id}}", name="get_task", summary="The status of a job")
    def get_task(task_id: str, request: Request, who: str = Depends(owner)):
        return task_json(_get(task_id, who), request)

    @app.get(f"{API}/task/{{task_id}}/result", name="task_result",
             summary="The video (supports HTTP range requests); with the `expires` and `sig` of "
                     "a signed `result_url`, no API key is needed until it expires",
             responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}})
    def task_result(task_id: str, request: Request, expires: str | None = None,
                    sig: str | None = None):
        if expires is None and sig is None:
            job = _get(task_id, owner(request))
        else:                                    # a signed link: the signature is the key
            signer_of(request.app.state).verify(task_id, expires, sig)
            job = _get(task_id, None)
        if job.status != COMPLETED or not job.result:
            raise NotReady(f"task {task_id} is {job.status}; its video is not available")
        if getattr(storage, "remote", False):    # object storage: download from the store
            return RedirectResponse(signed_result_url(job, request), status_code=307)
        path = storage.path(job.result)
        if not path.is_file():
            raise NotFound(f"the video of task {task_id} is no longer stored")
        ext = path.suffix.lstrip(".").lower()
        return FileResponse(path, media_type=MEDIA_TYPES.get(ext, "video/mp4"),
                            filename=f"{task_id}.{ext}")

    @app.delete(f"{API}/task/{{task_id}}", summary="Cancel a job")
    def cancel_task(task_id: str, request: Request, who: str = Depends(owner)):
        _get(task_id, who)
        job = store.cancel(task_id, owner=who)
        return task_json(job, request)

    @app.get("/healthz", summary="Liveness")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: database and storage reachable")
    def readyz():
        problems = []
        try:
            store.ping()
        except Exception as exc:  # any database failure means not ready
            problems.append(f"database: {type(exc).__name__}")
        if not storage.writable():
            problems.append("storage: not writable")
        if problems:
            return _error(503, "not_ready", "; ".join(problems))
        return {"status": "ready"}

    @app.get("/metrics", summary="Prometheus metrics")
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    add_model_routes(app, settings, owner)               # models, experiments (A/B)
    mount_graphql(app)                                   # /graphql beside REST
    from .sessions import attach as attach_sessions     # live sessions (docs/streaming.md)
    attach_sessions(app)
    return app
