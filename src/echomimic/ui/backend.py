"""Where the web UI's jobs run: in this process, or on an echomimic REST server.

Both backends take a :class:`Job` (the mode, the input files, the texts and the options) and
return a :class:`JobResult`; both report progress as ``progress(stage, fraction)`` with the
pipeline's stage names (the local one the stage's own fraction, the remote one the server's
fraction of the whole job). Neither re-implements a stage of the pipeline: :class:`LocalBackend`
calls :func:`echomimic.pipeline.animate`; :class:`RemoteBackend` submits the job to
``POST /api/v1/generate``, follows ``GET /api/v1/task/{id}`` and downloads the video.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import EchomimicError, InvalidOption

__all__ = ["Job", "JobResult", "LocalBackend", "RemoteBackend", "ServerError", "STAGE_SPANS",
           "STAGE_LABELS", "overall_fraction", "work_root"]

ProgressFn = Callable[[str, float], None]

#: Share of a whole job taken by each stage of the pipeline, ``(start, end)`` (render dominates).
STAGE_SPANS: dict[str, tuple[float, float]] = {
    "queued": (0.0, 0.0), "analyze": (0.0, 0.12), "analyze_video": (0.12, 0.3),
    "motion": (0.3, 0.32), "render": (0.32, 0.99), "download": (0.99, 1.0), "done": (1.0, 1.0),
}

#: What the progress bar says during each stage.
STAGE_LABELS: dict[str, str] = {
    "queued": "Waiting in the server's queue",
    "analyze": "Analyzing the photo and the speech",
    "analyze_video": "Reading the driving video",
    "motion": "Making the motion",
    "render": "Rendering frames",
    "download": "Downloading the video",
    "done": "Done",
}


def overall_fraction(stage: str, fraction: float, previous: float = 0.0) -> float:
    """Progress of the whole job in [0, 1] (never going back) from one stage's own fraction."""
    lo, hi = STAGE_SPANS.get(stage, (previous, previous))
    return max(previous, lo + (hi - lo) * min(1.0, max(0.0, float(fraction))))


@dataclass
class Job:
    """One request from the page."""

    mode: str                               # audio | video | mixed | text
    image: str | None
    audio: str | None = None
    video: str | None = None
    text: str | None = None
    transcript: str | None = None
    prompt: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    pose: str | None = None                 # half body: a pose sequence (JSON/NPZ), any mode
    persona: str | None = None              # a .persona file (any mode)

    def check(self) -> None:
        """Refuse, with one line, a job whose mode lacks an input (before any work)."""
        if not self.image:
            raise InvalidOption("upload a portrait photo first")
        need = {"audio": ("audio",), "video": ("video",), "mixed": ("audio", "video"),
                "text": ("text",)}.get(self.mode)
        if need is None:
            raise InvalidOption(f"unknown mode {self.mode!r}")
        names = {"audio": "a speech recording", "video": "a driving video", "text": "some text"}
        for name in need:
            value = getattr(self, name)
            if not value or (name == "text" and not str(value).strip()):
                raise InvalidOption(f"this mode needs {names[name]}")

    def drivers(self) -> dict[str, Any]:
        """The ``animate`` keyword arguments of this mode (inputs of other tabs are ignored)."""
        out: dict[str, Any] = {}
        if self.mode in ("audio", "mixed"):
            out["audio"] = self.audio
            if self.transcript and self.transcript.strip():
                out["transcript"] = self.transcript.strip()
        if self.mode in ("video", "mixed"):
            out["video"] = self.video
        if self.mode == "text":
            out["text"] = self.text
        if self.prompt and self.prompt.strip():
            out["prompt"] = self.prompt.strip()
        if self.pose:
            out["pose"] = self.pose
        if self.persona:
            out["persona"] = self.persona
        return out


@dataclass
class JobResult:
    """What a finished job gives the page."""

    video: Path
    motion: Path | None                     # the rendered motion track (JSON), when available
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0                    # wall time of the job

    def describe(self) -> str:
        """One line: size, frames, duration and speed."""
        s = self.summary
        dur = float(s.get("duration") or 0.0)
        speed = f", {dur / self.seconds:.2f}x real time" if self.seconds > 0 and dur else ""
        return (f"{s.get('width', '?')}x{s.get('height', '?')}, {s.get('n_frames', '?')} frames "
                f"at {float(s.get('fps') or 0):g} fps ({dur:.2f} s), made in "
                f"{self.seconds:.1f} s{speed}")


def work_root() -> Path:
    """Folder of the UI's results (``$ECHOMIMIC_UI_DIR``, else a folder in the system temp)."""
    root = Path(os.environ.get("ECHOMIMIC_UI_DIR") or Path(tempfile.gettempdir()) / "echomimic-ui")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _job_folder(root: Path, keep_seconds: float) -> Path:
    """A new folder for one job; folders of jobs older than ``keep_seconds`` are removed."""
    now = time.time()
    for old in root.glob("job-*"):
        try:
            if now - old.stat().st_mtime > keep_seconds:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    folder = root / f"job-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    return folder


class LocalBackend:
    """Runs :func:`echomimic.pipeline.animate` in this process."""

    remote = False

    def __init__(self, root: str | os.PathLike | None = None, *, keep_seconds: float = 3600.0):
        self.root = Path(root) if root is not None else None
        self.keep_seconds = keep_seconds

    def describe(self) -> str:
        return "this computer"

    def run(self, job: Job, progress: ProgressFn | None = None) -> JobResult:
        """Animate ``job``; writes ``result.mp4`` and ``motion.json`` into a new job folder."""
        from ..pipeline import animate

        job.check()
        folder = _job_folder(self.root or work_root(), self.keep_seconds)
        video, motion = folder / "result.mp4", folder / "motion.json"
        t0 = time.perf_counter()
        res = animate(job.image, video, motion_out=motion, progress=progress, **job.drivers(),
                      **job.options)
        return JobResult(video=Path(res.output), motion=motion if motion.exists() else None,
                         summary=res.summary(), warnings=list(res.meta.get("warnings", [])),
                         seconds=time.perf_counter() - t0)


class ServerError(EchomimicError):
    """The REST server could not be reached, or answered something unexpected."""

    code = "server_error"
    http_status = 502


class RemoteBackend:
    """Runs jobs on an echomimic REST server (``echomimic serve``).

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: the key sent as ``Authorization: Bearer``; default ``$ECHOMIMIC_API_KEY``.
        poll_interval: seconds between two looks at the job's status.
        timeout: seconds one HTTP request may take.
        max_wait: seconds to wait for a job to finish (None: as long as it takes); past it
            the job is cancelled on the server and a :class:`ServerError` names the wait.
    """

    remote = True

    def __init__(self, url: str, api_key: str | None = None, *, poll_interval: float = 0.3,
                 timeout: float = 60.0, max_wait: float | None = None,
                 root: str | os.PathLike | None = None, keep_seconds: float = 3600.0):
        url = str(url).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise InvalidOption(f"the server URL must start with http:// or https://, got {url!r}")
        self.url = url
        self.api_key = api_key if api_key is not None else os.environ.get("ECHOMIMIC_API_KEY")
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.max_wait = max_wait
        self.root = Path(root) if root is not None else None
        self.keep_seconds = keep_seconds

    def describe(self) -> str:
        return f"the server at {self.url}"

    # -- HTTP ------------------------------------------------------------------------------------

    def _client(self, api_key: str | None):
        import httpx

        key = (api_key or "").strip() or self.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout)

    @staticmethod
    def _raise_for(response) -> None:
        """A server error answer ``{code, message}`` as an :class:`EchomimicError`."""
        if response.status_code < 400:
            return
        try:
            body = response.json()
            code, message = str(body["code"]), str(body["message"])
        except Exception:
            raise ServerError(f"the server answered HTTP {response.status_code}") from None
        err = EchomimicError(message, code=code)
        err.http_status = response.status_code
        raise err

    def run(self, job: Job, progress: ProgressFn | None = None, *,
            api_key: str | None = None) -> JobResult:
        """Submit ``job``, follow it to the end and download its video.

        ``progress(stage, fraction)`` gets the server's stage and the fraction of the *whole*
        job done (the server's ``progress``), not the stage's own fraction.
        """
        import httpx

        job.check()
        report = progress or (lambda stage, fraction: None)
        folder = _job_folder(self.root or work_root(), self.keep_seconds)
        fields_out: dict[str, str] = {"mode": "video" if job.mode == "mixed" else job.mode}
        files: dict[str, Any] = {}
        drivers = job.drivers()
        handles = []
        t0 = time.perf_counter()
        try:
            for name in ("image", "audio", "video", "pose", "persona"):
                path = job.image if name == "image" else drivers.get(name)
                if path:
                    fh = open(path, "rb")
                    handles.append(fh)
                    files[name] = (Path(path).name, fh)
            for name in ("text", "transcript", "prompt"):
                if drivers.get(name):
                    fields_out[name] = str(drivers[name])
            for name, value in job.options.items():
                fields_out[name] = ("true" if value else "false") if isinstance(value, bool) \
                    else str(value)
            with self._client(api_key) as client:
                report("queued", 0.0)
                resp = client.post("/api/v1/generate", data=fields_out, files=files)
                self._raise_for(resp)
                task = resp.json()
                task_id = task["task_id"]
                while task["status"] not in ("completed", "failed", "cancelled"):
                    if self.max_wait is not None and time.perf_counter() - t0 > self.max_wait:
                        client.delete(f"/api/v1/task/{task_id}")
                        raise ServerError(f"the server did not finish the job within "
                                          f"{self.max_wait:g} s (it is {task['status']})")
                    time.sleep(self.poll_interval)
                    resp = client.get(f"/api/v1/task/{task_id}")
                    self._raise_for(resp)
                    task = resp.json()
                    stage = task.get("stage") or task["status"]
                    if stage != "done":              # "done" comes after the download
                        report(stage, min(0.99, float(task.get("progress") or 0.0)))
                if task["status"] != "completed":
                    err = task.get("error") or {}
                    raise EchomimicError(str(err.get("message") or f"the job was {task['status']}"),
                                         code=str(err.get("code") or task["status"]))
                report("download", 0.99)
                video = folder / "result.mp4"
                with client.stream("GET", f"/api/v1/task/{task_id}/result") as r:
                    if r.status_code >= 400:
                        r.read()
                        self._raise_for(r)
                    with open(video, "wb") as out:
                        for chunk in r.iter_bytes():
                            out.write(chunk)
                report("done", 1.0)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the server at {self.url}: "
                              f"{type(exc).__name__}") from None
        finally:
            for fh in handles:
                fh.close()
        summary = dict(task.get("result") or {})
        return JobResult(video=video, motion=None, summary=summary,
                         warnings=list(summary.get("warnings") or []),
                         seconds=time.perf_counter() - t0)

