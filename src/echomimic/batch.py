"""Many videos from a JSONL file: locally in parallel, or through a running REST service.

Each line of the jobs file is one JSON object: the inputs of :func:`echomimic.animate` (``image``,
``audio``, ``video``, ``motion`` as file paths, relative to the jobs file's folder; ``text``,
``transcript``, ``prompt`` as text), any field of :class:`echomimic.pipeline.AnimateOptions`, and
optionally ``id`` or ``output``, the name of the video in the output folder::

    {"id": "alice", "image": "alice.jpg", "audio": "hello.wav", "crop": "face", "size": 512}
    {"image": "bob.png", "text": "Good morning!", "lang": "en"}

Without a name a job is called ``job-<hash of the line>``. Names are letters, digits, ``.``,
``_`` and ``-`` only (no folders), so no line can write outside the output folder.

:func:`run_batch` runs every job, in a process pool (``animate`` in each process) or by
submitting it to ``POST /api/v1/generate`` of a server with an ``Idempotency-Key`` made from the
line and its input files, so that submitting again never makes a second task. Videos are
written atomically (a finished ``<name>.mp4`` is always complete) and recorded in
``batch_status.json`` in the output folder; a rerun skips the jobs whose video is there and
whose line has not changed. A bad line or a failed job is reported and the others still run;
``batch_report.jsonl`` in the output folder has one line per job of the last run.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import re
import tempfile
import threading
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from .errors import EchomimicError, InvalidOption

__all__ = ["BatchInputError", "BatchJob", "BatchSummary", "Outcome", "parse_jobs", "run_batch",
           "default_jobs"]

STATUS_FILE = "batch_status.json"
REPORT_FILE = "batch_report.jsonl"
FILE_FIELDS = ("image", "audio", "video", "motion")
TEXT_FIELDS = ("text", "transcript", "prompt")
NAME_FIELDS = ("id", "output")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_TERMINAL = ("completed", "failed", "cancelled")
_MIME = {"image": "application/octet-stream", "audio": "application/octet-stream",
         "video": "application/octet-stream", "motion": "application/json"}


class BatchInputError(EchomimicError):
    """The jobs file cannot be used at all (missing, unreadable, not JSONL, no jobs)."""

    code = "batch_input_unusable"


@dataclass(frozen=True)
class BatchJob:
    """One usable line: its name, the arguments of ``animate`` and the hash that identifies it."""

    line: int
    name: str
    files: dict[str, str]            # input name -> absolute path
    texts: dict[str, str]
    options: dict[str, Any]
    key: str                         # sha256 of the line's meaning and its input files' bytes


@dataclass
class Outcome:
    """What happened to one line: ``done``, ``skipped`` (finished by an earlier run) or
    ``failed`` (with ``error = {"code", "message"}``)."""

    line: int
    name: str | None
    status: str
    output: str | None = None
    error: dict[str, str] | None = None
    seconds: float | None = None
    task_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class BatchSummary:
    """Every line's :class:`Outcome`, in line order."""

    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def exit_code(self) -> int:
        """0 when every job succeeded (or was done before), 1 when some failed."""
        return 1 if self.failed else 0

    def line(self) -> str:
        return (f"{len(self.outcomes)} jobs: {self.count('done')} done, "
                f"{self.count('skipped')} already done, {self.failed} failed")


def default_jobs(server: bool) -> int:
    """Parallel jobs: half the cores locally (a render uses about two: drawing and encoding),
    4 requests in flight with a server (it does the work)."""
    return 4 if server else max(1, (os.cpu_count() or 2) // 2)


# ------------------------------------------------------------------------------------------------
# reading the jobs file
# ------------------------------------------------------------------------------------------------


def _option_fields() -> dict[str, Any]:
    from .pipeline import AnimateOptions

    return {f.name: f for f in fields(AnimateOptions)}


def _check_option(name: str, value: Any, default: Any) -> Any:
    """A JSON value checked against the type of the option's default."""
    if value is None:
        if default is None:
            return None
        raise InvalidOption(f"{name} cannot be null")
    kind = float if name == "blink_rate" else (type(default) if default not in (None, MISSING) else str)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or \
             (isinstance(value, float) and value.is_integer())
        value = int(value) if ok else value
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        want = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, "a string")
        raise InvalidOption(f"{name} must be {want}, got {value!r}")
    return value


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse_line(obj: Any, base: Path) -> tuple[str | None, dict, dict, dict, str]:
    """``(name or None, files, texts, options, key)`` of one JSON object (raises on problems)."""
    from .pipeline import AnimateOptions

    if not isinstance(obj, dict):
        raise InvalidOption(f"a line must be a JSON object, got {type(obj).__name__}")
    known = _option_fields()
    unknown = sorted(k for k in obj if k not in known and k not in FILE_FIELDS + TEXT_FIELDS
                     + NAME_FIELDS)
    if unknown:
        raise InvalidOption(f"unknown field(s): {', '.join(unknown)}")
    files: dict[str, str] = {}
    digests: dict[str, str] = {}
    for name in FILE_FIELDS:
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise InvalidOption(f"{name} must be a file path")
        path = (base / value).resolve() if not os.path.isabs(value) else Path(value)
        if not path.is_file():
            raise EchomimicError(f"{name} file {value!r} not found", code="input_missing")
        files[name] = str(path)
        digests[name] = _file_digest(path)
    texts: dict[str, str] = {}
    for name in TEXT_FIELDS:
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidOption(f"{name} must be a string")
        if name == "transcript" and value.lower().endswith(".txt"):
            path = (base / value).resolve()
            if path.is_file():
                value = path.read_text(encoding="utf-8")
        texts[name] = value
    if "image" not in files:
        raise InvalidOption("the line has no image (portrait photo)")
    if not ({"audio", "video", "motion"} & set(files) or "text" in texts):
        raise InvalidOption("nothing drives the portrait: give audio, text, a video or a motion file")
    options = {k: _check_option(k, v, known[k].default) for k, v in obj.items() if k in known}
    try:
        AnimateOptions.from_kwargs(**options)
    except (TypeError, ValueError) as exc:
        raise InvalidOption(str(exc)) from None
    name = None
    for field_name in ("output", "id"):
        raw = obj.get(field_name)
        if raw is None:
            continue
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            raise InvalidOption(f"{field_name} must be a name")
        raw = str(raw)
        if field_name == "output" and raw.lower().endswith(".mp4"):
            raw = raw[:-4]
        if not _NAME.match(raw) or raw.endswith("."):
            raise InvalidOption(f"{field_name} {obj[field_name]!r} is not a usable name: letters, "
                                f"digits, '.', '_' and '-' only, starting with a letter or digit")
        name = raw
        break
    meaning = {"texts": texts, "options": options, "files": digests}
    key = hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()
    return name, files, texts, options, key


def parse_jobs(path: str | os.PathLike) -> tuple[list[BatchJob], list[Outcome]]:
    """The usable jobs of a JSONL file and a ``failed`` :class:`Outcome` for each bad line.

    Raises :class:`BatchInputError` when the file is missing or unreadable, is not text, or has
    no line that is a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise BatchInputError(f"jobs file {str(path)!r} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BatchInputError(f"{str(path)!r} is not a text file (JSONL expected)") from None
    except OSError as exc:
        raise BatchInputError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    base = path.resolve().parent
    jobs: list[BatchJob] = []
    bad: list[Outcome] = []
    objects = 0
    names: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            bad.append(Outcome(number, None, "failed", error={
                "code": "invalid_line", "message": f"not JSON ({exc.msg} at column {exc.colno})"}))
            continue
        objects += isinstance(obj, dict)
        try:
            name, files, texts, options, key = _parse_line(obj, base)
        except EchomimicError as exc:
            given = obj.get("output") or obj.get("id") if isinstance(obj, dict) else None
            bad.append(Outcome(number, str(given) if given is not None else None, "failed",
                               error={"code": exc.code, "message": exc.message}))
            continue
        name = name or f"job-{key[:12]}"
        if name in names:
            bad.append(Outcome(number, name, "failed", error={
                "code": "duplicate_name",
                "message": f"the name {name!r} is already used by line {names[name]}"}))
            continue
        names[name] = number
        jobs.append(BatchJob(number, name, files, texts, options, key))
    if objects == 0:
        raise BatchInputError(f"{str(path)!r} has no job: JSONL expected, one JSON object a line")
    return jobs, bad


# ------------------------------------------------------------------------------------------------
# the output folder: status file, report, atomic writes
# ------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Status:
    """``batch_status.json``: the finished jobs (name -> key, size) and submitted task ids."""

    def __init__(self, folder: Path):
        self.path = folder / STATUS_FILE
        self.lock = threading.Lock()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.jobs: dict[str, dict] = dict(data.get("jobs", {}))
        except (OSError, ValueError, AttributeError):
            self.jobs = {}

    def finished(self, job: BatchJob, folder: Path) -> bool:
        """Whether an earlier run made this job's video (same line, complete file)."""
        entry = self.jobs.get(job.name) or {}
        video = folder / f"{job.name}.mp4"
        return (entry.get("status") == "done" and entry.get("key") == job.key
                and video.is_file() and video.stat().st_size == entry.get("bytes"))

    def record(self, name: str, **entry: Any) -> None:
        with self.lock:
            merged = {**self.jobs.get(name, {}), **entry}
            self.jobs[name] = {k: v for k, v in merged.items() if v is not None}
            _write_atomic(self.path, json.dumps({"version": 1, "jobs": self.jobs}, indent=1,
                                                sort_keys=True))


# ------------------------------------------------------------------------------------------------
# running the jobs locally
# ------------------------------------------------------------------------------------------------


def _render(files: dict[str, str], texts: dict[str, str], options: dict[str, Any],
            partial: str) -> dict[str, Any]:
    """Run one job in a pool process; returns ``{"error": ...}`` instead of raising."""
    from .pipeline import animate

    try:
        result = animate(files["image"], partial, audio=files.get("audio"),
                         video=files.get("video"), motion=files.get("motion"),
                         text=texts.get("text"), transcript=texts.get("transcript"),
                         prompt=texts.get("prompt"), **options)
    except EchomimicError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}
    except Exception as exc:  # a bug: report it on this line, keep the batch going
        return {"error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}}
    return {"frames": result.n_frames, "duration": result.duration}


def _run_local(jobs: list[BatchJob], out: Path, status: _Status, workers: int,
               report: Callable[[Outcome], None]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    ctx = multiprocessing.get_context("spawn")   # no fork of a process with threads
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        started: dict[cf.Future, tuple[BatchJob, Path, float]] = {}
        for job in jobs:
            partial = out / f".{job.name}.partial.mp4"
            fut = pool.submit(_render, job.files, job.texts, job.options, str(partial))
            started[fut] = (job, partial, time.monotonic())
        for fut in cf.as_completed(started):
            job, partial, t0 = started[fut]
            try:
                result = fut.result()
            except Exception as exc:  # the process died (out of memory, a crash)
                result = {"error": {"code": "worker_crashed",
                                    "message": f"the process running the job died ({type(exc).__name__})"}}
            outcome = _finish(job, out, status, partial, result, time.monotonic() - t0)
            outcomes.append(outcome)
            report(outcome)
    return outcomes


def _finish(job: BatchJob, out: Path, status: _Status, partial: Path, result: dict[str, Any],
            seconds: float, task_id: str | None = None) -> Outcome:
    """Move a finished video into place and record it, or record the failure."""
    if "error" in result:
        partial.unlink(missing_ok=True)
        status.record(job.name, status="failed", key=job.key, error=result["error"])
        return Outcome(job.line, job.name, "failed", error=result["error"], seconds=round(seconds, 2),
                       task_id=task_id)
    video = out / f"{job.name}.mp4"
    os.replace(partial, video)
    status.record(job.name, status="done", key=job.key, bytes=video.stat().st_size,
                  output=video.name, task_id=task_id,
                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return Outcome(job.line, job.name, "done", output=str(video), seconds=round(seconds, 2),
                   task_id=task_id)


# ------------------------------------------------------------------------------------------------
# running the jobs on a server
# ------------------------------------------------------------------------------------------------


class _ServerError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class _Client:
    """The calls ``--server`` makes: submit, poll, download (with retries on 429/503)."""

    def __init__(self, server: str, api_key: str | None, *, poll_interval: float, timeout: float):
        import httpx

        self.httpx = httpx
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.api = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=120.0)
        self.plain = httpx.Client(timeout=120.0, follow_redirects=True)   # signed links
        self.poll_interval, self.timeout = poll_interval, timeout

    def close(self) -> None:
        self.api.close()
        self.plain.close()

    def _request(self, method: str, url: str, **kw: Any):
        """One API call, retried when the server is busy (429/503) or briefly unreachable."""
        for attempt in range(8):
            try:
                r = self.api.request(method, url, **kw)
            except self.httpx.TransportError as exc:
                if attempt == 7:
                    raise _ServerError("server_unreachable", f"cannot reach the server ({exc})") from None
                time.sleep(min(8.0, 0.5 * 2 ** attempt))
                continue
            if r.status_code in (429, 503) and attempt < 7:
                try:
                    wait = float(r.headers.get("retry-after", ""))
                except ValueError:
                    wait = 0.5 * 2 ** attempt
                time.sleep(min(30.0, max(0.1, wait)))
                for value in kw.get("files", {}).values():
                    value[1].seek(0)
                continue
            if r.status_code >= 400:
                raise _server_error(r)
            return r
        raise _ServerError("server_busy", "the server stayed busy")

    def submit(self, job: BatchJob, retry: int = 0) -> str:
        """Upload the job; ``retry`` > 0 makes a new task after an earlier one failed."""
        data = {k: v for k, v in job.texts.items()}
        data.update({k: _form_value(v) for k, v in job.options.items()})
        handles = {name: open(path, "rb") for name, path in job.files.items()}
        try:
            files = {name: (Path(job.files[name]).name, fh, _MIME[name]) for name, fh in handles.items()}
            r = self._request("POST", "/api/v1/generate", data=data, files=files,
                              headers={"Idempotency-Key": _idempotency_key(job, retry)})
        finally:
            for fh in handles.values():
                fh.close()
        return str(r.json()["task_id"])

    def wait(self, task_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        delay = self.poll_interval
        while True:
            body = self._request("GET", f"/api/v1/task/{task_id}").json()
            if body.get("status") in _TERMINAL:
                return body
            if time.monotonic() > deadline:
                raise _ServerError("timeout", f"task {task_id} still {body.get('status')} after "
                                              f"{self.timeout:.0f} s")
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)

    def download(self, task_id: str, body: dict[str, Any], target: Path) -> None:
        url = body.get("result_url")
        if url:                                   # a signed link: no API key (it may be S3's)
            stream = self.plain.stream("GET", url)
        else:
            stream = self.api.stream("GET", f"/api/v1/task/{task_id}/result", follow_redirects=True)
        with stream as r:
            if r.status_code >= 400:
                r.read()
                raise _server_error(r)
            with open(target, "wb") as fh:
                for chunk in r.iter_bytes(1 << 20):
                    fh.write(chunk)
        if target.stat().st_size == 0:
            raise _ServerError("empty_result", "the server sent an empty video")


def _idempotency_key(job: BatchJob, retry: int) -> str:
    """The same key for the same line and input files (so a rerun finds its task), and a new one
    for each retry of a line whose task failed."""
    return f"batch-{job.key[:48]}" + (f"-r{retry}" if retry else "")


def _server_error(r: Any) -> _ServerError:
    try:
        body = r.json()
        return _ServerError(str(body.get("code") or f"http_{r.status_code}"),
                            str(body.get("message") or r.reason_phrase))
    except (ValueError, AttributeError):
        return _ServerError(f"http_{r.status_code}", f"HTTP {r.status_code} {r.reason_phrase}")


def _run_remote(jobs: list[BatchJob], out: Path, status: _Status, workers: int, client: _Client,
                report: Callable[[Outcome], None]) -> list[Outcome]:
    def one(job: BatchJob) -> Outcome:
        t0 = time.monotonic()
        partial = out / f".{job.name}.partial.mp4"
        task_id = None
        prev = status.jobs.get(job.name) or {}
        same = prev.get("key") == job.key
        retry = int(prev.get("retry", 0)) if same else 0
        if same and prev.get("status") == "failed" and prev.get("task_id"):
            retry += 1                           # its task failed on the server: a new task
        try:
            task_id = client.submit(job, retry)
            status.record(job.name, status="submitted", key=job.key, task_id=task_id, retry=retry,
                          error=None)
            body = client.wait(task_id)
            if body["status"] != "completed":
                err = body.get("error") or {}
                result = {"error": {"code": str(err.get("code") or body["status"]),
                                    "message": str(err.get("message") or f"the task was {body['status']}")}}
            else:
                client.download(task_id, body, partial)
                result = dict(body.get("result") or {})
        except _ServerError as exc:
            result = {"error": {"code": exc.code, "message": exc.message}}
        except Exception as exc:  # a bug or an odd answer: report it on this line
            result = {"error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}}
        outcome = _finish(job, out, status, partial, result, time.monotonic() - t0, task_id)
        report(outcome)
        return outcome

    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch") as pool:
        return list(pool.map(one, jobs))


# ------------------------------------------------------------------------------------------------
# the batch
# ------------------------------------------------------------------------------------------------


def run_batch(jobs_file: str | os.PathLike, out_dir: str | os.PathLike, *,
              server: str | None = None, jobs: int | None = None, api_key: str | None = None,
              on_outcome: Callable[[Outcome], None] | None = None,
              poll_interval: float = 0.5, timeout: float = 6 * 3600.0) -> BatchSummary:
    """Run every job of ``jobs_file``, writing ``<name>.mp4`` into ``out_dir``.

    ``server``: the base URL of an ``echomimic serve`` (jobs are submitted there, with
    ``api_key``); otherwise they run here in ``jobs`` processes. ``on_outcome`` is called as each
    job ends (bad lines first). Raises :class:`BatchInputError` when the file cannot be used.
    """
    if jobs is not None and int(jobs) < 1:
        raise InvalidOption("--jobs must be at least 1")
    if server is not None and not re.match(r"^https?://[^\s/]+", server):
        raise InvalidOption(f"--server must be an http(s) URL, got {server!r}")
    parsed, bad = parse_jobs(jobs_file)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BatchInputError(f"the output {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    status = _Status(out)
    report = on_outcome or (lambda _o: None)
    outcomes = list(bad)
    for o in bad:
        report(o)
    todo: list[BatchJob] = []
    for job in parsed:
        if status.finished(job, out):
            o = Outcome(job.line, job.name, "skipped", output=str(out / f"{job.name}.mp4"))
            outcomes.append(o)
            report(o)
        else:
            todo.append(job)
    workers = min(int(jobs or default_jobs(server is not None)), max(1, len(todo)))
    try:
        if todo and server is None:
            outcomes += _run_local(todo, out, status, workers, report)
        elif todo:
            client = _Client(server, api_key, poll_interval=poll_interval, timeout=timeout)
            try:
                outcomes += _run_remote(todo, out, status, workers, client, report)
            finally:
                client.close()
    finally:
        summary = BatchSummary(sorted(outcomes, key=lambda o: o.line))
        _write_atomic(out / REPORT_FILE,
                      "".join(json.dumps(o.as_dict(), ensure_ascii=False) + "\n"
                              for o in summary.outcomes))
    return summary
