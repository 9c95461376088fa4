"""GraphQL beside REST (Strawberry on FastAPI), at ``/graphql``: the same store, API keys,
limits, option names and error codes.

* ``generate(input: GenerateInput!, idempotency_key: String): Task!`` — a mutation that goes
  through the REST submission path (:func:`echomimic.service.app.submit_job`); inputs by URL
  (``image_url`` ...) or uploaded with the GraphQL multipart request spec (``image``, ``audio``,
  ``video`` of type ``Upload``); the options of the option table in ``options`` (snake_case,
  as in REST and Python).
* ``task(id: ID!): Task!`` and ``tasks(status, first, after): TaskConnection!`` — a key sees only
  its own tasks (another key's id answers ``not_found``, as REST does); ``tasks`` pages newest
  first with an opaque cursor.
* ``taskProgress(id: ID!): Task!`` — a subscription over WebSocket (``graphql-transport-ws`` or
  ``graphql-ws``) that sends the task each time its status, stage or progress changes, and ends
  when the task is finished. The API key goes in the upgrade request's ``Authorization`` header
  or in the ``connection_init`` payload (``{"Authorization": "Bearer <key>"}``).

Errors carry the REST code and HTTP status in ``extensions``: ``{"code": "no_face",
"status": 422}``.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import logging
from typing import Any, AsyncGenerator, Optional

import strawberry
from fastapi.concurrency import run_in_threadpool
from graphql import GraphQLError
from sqlalchemy.exc import OperationalError
from starlette.datastructures import UploadFile
from strawberry.fastapi import GraphQLRouter
from strawberry.file_uploads import Upload
from strawberry.schema.config import StrawberryConfig
from strawberry.scalars import JSON
from strawberry.types import Info

from ..errors import EchomimicError, InvalidOption
from ..options import limits_text, options_for
from .errors import InputTooLarge, NotFound, Unauthorized
from .store import TERMINAL, Job

__all__ = ["schema", "mount_graphql", "GRAPHQL_PATH"]

log = logging.getLogger("echomimic.service.graphql")

GRAPHQL_PATH = "/graphql"
_POLL_SECONDS = 0.2
_MAX_PAGE = 100


def _gql_error(exc: EchomimicError) -> GraphQLError:
    ext: dict[str, Any] = {"code": exc.code, "status": exc.http_status}
    retry = (getattr(exc, "headers", None) or {}).get("Retry-After")
    if retry is not None:
        ext["retry_after"] = retry
    return GraphQLError(exc.message, extensions=ext)


def _rest_errors(fn):
    """Turn the service's errors into GraphQL errors with the REST code in ``extensions``."""
    import functools

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except EchomimicError as exc:
            raise _gql_error(exc) from None
        except OperationalError:
            raise GraphQLError("the job database is busy; retry in a moment",
                               extensions={"code": "database_busy", "status": 503}) from None

    return wrapper


class _Headers:
    """A stand-in request for the API-key check of a WebSocket's ``connection_init``."""

    def __init__(self, authorization: str):
        self.headers = {"authorization": authorization}


def _who(info: Info) -> str:
    """The caller's API key id (the same check as REST), from the request's header or, on a
    WebSocket, from the ``connection_init`` payload."""
    request = info.context["request"]
    owner = request.app.state.owner
    try:
        return owner(request)
    except Unauthorized:
        params = info.context.get("connection_params") or {}
        token = params.get("Authorization") or params.get("authorization") if isinstance(
            params, dict) else None
        if not token:
            raise
        return owner(_Headers(str(token)))


# ------------------------------------------------------------------------------------------------
# types
# ------------------------------------------------------------------------------------------------


@strawberry.enum
class TaskStatus(enum.Enum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


@strawberry.type
class TaskError:
    code: str
    message: str


@strawberry.type
class Variant:
    experiment: str
    variant: str


@strawberry.type
class Task:
    """A job, as ``GET /api/v1/task/{id}`` describes it."""

    id: strawberry.ID
    status: TaskStatus
    progress: float
    stage: Optional[str]
    eta_s: Optional[float]
    error: Optional[TaskError]
    result_url: Optional[str]
    result: Optional[JSON]
    attempts: int
    created_at: Optional[str]
    started_at: Optional[str]
    finished_at: Optional[str]
    renderer: str
    model_version: Optional[str]
    experiment: Optional[Variant]

    @classmethod
    def of(cls, job: Job, request: Any) -> "Task":
        from .app import task_json

        d = task_json(job, request)
        err = d["error"]
        exp = d.get("experiment")
        return cls(id=strawberry.ID(d["task_id"]), status=TaskStatus(d["status"]),
                   progress=d["progress"], stage=d["stage"], eta_s=d["eta_s"],
                   error=TaskError(code=err["code"], message=err["message"]) if err else None,
                   result_url=d["result_url"], result=d["result"], attempts=d["attempts"],
                   created_at=d["created_at"], started_at=d["started_at"],
                   finished_at=d["finished_at"], renderer=d["renderer"],
                   model_version=d["model_version"],
                   experiment=Variant(experiment=exp["name"], variant=exp["variant"])
                   if exp else None)


@strawberry.type
class TaskEdge:
    cursor: str
    node: Task


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: Optional[str]


@strawberry.type
class TaskConnection:
    edges: list[TaskEdge]
    nodes: list[Task]
    page_info: PageInfo


def _options_input() -> type:
    """``AnimateOptionsInput``, one field per option of the table a client may set."""
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__annotations__": annotations,
                                 "__doc__": "The options of `echomimic animate` (the option "
                                            "table; same names as REST and Python)."}
    for opt in options_for("rest"):
        annotations[opt.name] = Optional[opt.type]
        limits = limits_text(opt)
        text = f"{opt.help} ({limits})" if limits else opt.help
        if opt.default is not None:
            text += f" Default: {opt.default}."
        namespace[opt.name] = strawberry.field(default=None, description=text)
    return strawberry.input(type("AnimateOptionsInput", (), namespace))


AnimateOptionsInput = _options_input()


@strawberry.input
class GenerateInput:
    """What ``POST /api/v1/generate`` takes: inputs by URL or upload, texts, the options."""

    image_url: Optional[str] = None
    audio_url: Optional[str] = None
    video_url: Optional[str] = None
    image: Optional[Upload] = None
    audio: Optional[Upload] = None
    video: Optional[Upload] = None
    text: Optional[str] = None
    transcript: Optional[str] = None
    prompt: Optional[str] = None
    mode: Optional[str] = None
    resolution: Optional[str] = None
    model_version: Optional[str] = None
    options: Optional[AnimateOptionsInput] = None  # type: ignore[valid-type]


# ------------------------------------------------------------------------------------------------
# resolvers
# ------------------------------------------------------------------------------------------------


def _cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(json.dumps([job.created_at, job.id]).encode()).decode()


def _uncursor(cursor: str) -> tuple[float, str]:
    try:
        t, i = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())
        return float(t), str(i)
    except (ValueError, TypeError):
        raise InvalidOption("after is not a cursor of this list") from None


async def _read_upload(name: str, up: Any, limit: int) -> bytes:
    if not isinstance(up, UploadFile):
        raise InvalidOption(f"{name} must be an uploaded file")
    if up.size is not None and up.size > limit:
        raise InputTooLarge(f"the {name} is {up.size} bytes, over the limit of {limit} bytes")
    data = await up.read()
    if len(data) > limit:
        raise InputTooLarge(f"the {name} is {len(data)} bytes, over the limit of {limit} bytes")
    return data


@strawberry.type
class Query:
    @strawberry.field(description="A task of this API key.")
    @_rest_errors
    async def task(self, info: Info, id: strawberry.ID) -> Task:
        who = _who(info)
        request = info.context["request"]
        store = request.app.state.store
        job = await run_in_threadpool(store.get, str(id), who)
        if job is None:
            raise NotFound(f"no task {str(id)!r}")
        return Task.of(job, request)

    @strawberry.field(description="This API key's tasks, newest first.")
    @_rest_errors
    async def tasks(self, info: Info, status: Optional[TaskStatus] = None, first: int = 20,
                    after: Optional[str] = None) -> TaskConnection:
        who = _who(info)
        if not 1 <= first <= _MAX_PAGE:
            raise InvalidOption(f"first must be between 1 and {_MAX_PAGE}, got {first}")
        request = info.context["request"]
        store = request.app.state.store
        jobs = await run_in_threadpool(
            lambda: store.list_jobs(who, status=status.value if status else None,
                                    limit=first + 1,
                                    after=_uncursor(after) if after else None))
        page = jobs[:first]
        tasks = [Task.of(j, request) for j in page]
        return TaskConnection(
            edges=[TaskEdge(cursor=_cursor(j), node=t) for j, t in zip(page, tasks)],
            nodes=tasks,
            page_info=PageInfo(has_next_page=len(jobs) > first,
                               end_cursor=_cursor(page[-1]) if page else None))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Submit a job (the same checks, limits and idempotency as "
                                     "POST /api/v1/generate).")
    @_rest_errors
    async def generate(self, info: Info, input: GenerateInput,
                       idempotency_key: Optional[str] = None) -> Task:
        from .app import _limit, submit_job

        who = _who(info)
        request = info.context["request"]
        state = request.app.state
        idem = idempotency_key or request.headers.get("idempotency-key")

        async def read() -> tuple[dict[str, Any], dict[str, bytes]]:
            fields_in: dict[str, Any] = {}
            for key in ("image_url", "audio_url", "video_url", "text", "transcript", "prompt",
                        "mode", "resolution", "model_version"):
                value = getattr(input, key)
                if value is not None:
                    fields_in[key] = value
            if input.options is not None:
                for opt in options_for("rest"):
                    value = getattr(input.options, opt.name)
                    if value is not None:
                        fields_in[opt.name] = value
            uploads: dict[str, bytes] = {}
            for name in ("image", "audio", "video"):
                up = getattr(input, name)
                if up is not None:
                    uploads[name] = await _read_upload(name, up, _limit(state.settings, name))
            return fields_in, uploads

        job, _created = await submit_job(state, who, idem, read)
        return Task.of(job, request)

    @strawberry.mutation(description="Cancel a task (as DELETE /api/v1/task/{id}).")
    @_rest_errors
    async def cancel(self, info: Info, id: strawberry.ID) -> Task:
        who = _who(info)
        request = info.context["request"]
        store = request.app.state.store
        if await run_in_threadpool(store.get, str(id), who) is None:
            raise NotFound(f"no task {str(id)!r}")
        job = await run_in_threadpool(store.cancel, str(id), who)
        return Task.of(job, request)


@strawberry.type
class Subscription:
    @strawberry.subscription(name="taskProgress",
                             description="The task each time its status, stage or progress "
                                         "changes, until it is finished.")
    async def task_progress(self, info: Info, id: strawberry.ID) -> AsyncGenerator[Task, None]:
        try:
            who = _who(info)
            request = info.context["request"]
            store = request.app.state.store
            job = await run_in_threadpool(store.get, str(id), who)
            if job is None:
                raise NotFound(f"no task {str(id)!r}")
        except EchomimicError as exc:
            raise _gql_error(exc) from None
        seen = None
        while True:
            key = (job.status, job.stage, round(job.progress, 4))
            if key != seen:
                seen = key
                yield Task.of(job, request)
            if job.status in TERMINAL:
                return
            await asyncio.sleep(_POLL_SECONDS)
            job = await run_in_threadpool(store.get, str(id), who) or job


class _Schema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:  # noqa: ANN001
        """Errors with a code are the caller's (answered, not logged); others are bugs."""
        for error in errors:
            if not (error.extensions or {}).get("code"):
                log.error("GraphQL error: %s", error, exc_info=error.original_error)


schema = _Schema(query=Query, mutation=Mutation, subscription=Subscription,
                 config=StrawberryConfig(auto_camel_case=False))


def mount_graphql(app: Any) -> None:
    """Serve the schema at ``/graphql`` (queries and mutations over HTTP, with multipart
    uploads; subscriptions over WebSocket)."""
    router = GraphQLRouter(schema, path=GRAPHQL_PATH, multipart_uploads_enabled=True,
                           graphql_ide=None)
    app.include_router(router)
