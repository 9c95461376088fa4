"""Workers: take queued jobs from the store and run them through :func:`echomimic.pipeline.animate`.

:func:`run_job` is the unit of work: it claims one job by id, runs it, and records the outcome.
The Celery task of :mod:`echomimic.service.queue` calls it (``echomimic serve`` and
``echomimic worker``); a duplicate delivery finds the job not queued and does nothing.
:class:`Worker` is a loop that needs no broker: reap expired leases, claim the oldest queued job,
run it, repeat (for programs that embed the service without Celery).

While a job runs its lease is renewed by a heartbeat thread (so long stages without progress
reports keep it) and by the progress callback, which also records the progress and raises
:class:`~echomimic.errors.Cancelled` as soon as the job's cancellation is requested.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

from ..errors import Cancelled, EchomimicError, InvalidOption
from .settings import Settings
from .storage import LocalStorage
from .store import CANCELLED, Job, JobStore

log = logging.getLogger("echomimic.service.worker")

#: ``hook(job_id, stage, fraction)``, called from the progress callback before the cancel check.
ProgressHook = Callable[[str, str, float], None]

# share of the whole job taken by each pipeline stage (render dominates)
_STAGES = {"analyze": (0.0, 0.15), "video": (0.15, 0.2), "motion": (0.2, 0.2),
           "render": (0.2, 0.98), "done": (1.0, 1.0)}


class LeaseLost(Cancelled):
    """The worker's lease was taken away (it was presumed dead); its run must stop silently."""

    code = "lease_lost"


def overall_progress(stage: str, fraction: float, previous: float) -> float:
    """Progress of the whole job (0..1, never going back) from a stage's own fraction."""
    lo, hi = _STAGES.get(stage, (previous, previous))
    return max(previous, lo + (hi - lo) * min(1.0, max(0.0, float(fraction))))


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _Heartbeat(threading.Thread):
    """Renews a lease every third of its length until stopped; notes when it is lost."""

    def __init__(self, store: JobStore, job: Job, lease_seconds: float):
        super().__init__(daemon=True, name=f"heartbeat-{job.id[:8]}")
        self.store, self.job, self.lease = store, job, lease_seconds
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease / 3.0):
            try:
                if not self.store.heartbeat(self.job.id, self.job.lease_token, self.lease):
                    self.lost.set()
                    return
            except Exception:  # a database hiccup: try again at the next beat
                log.exception("heartbeat of job %s failed", self.job.id)


def run_claimed(job: Job, *, store: JobStore, storage: LocalStorage, settings: Settings,
                progress_hook: ProgressHook | None = None) -> str:
    """Run a job this worker holds the lease of and record how it ended.

    Returns the status written (``completed``, ``failed``, ``cancelled``), or ``"lost"`` when the
    lease was lost meanwhile (another run owns the job then, and nothing is written).
    """
    from ..pipeline import animate

    lease = float(settings.lease_seconds)
    token = job.lease_token or ""
    beat = _Heartbeat(store, job, lease)
    state = {"progress": 0.0, "stage": "", "written": 0.0, "beat": time.monotonic()}

    def progress(stage: str, fraction: float) -> None:
        if progress_hook is not None:
            progress_hook(job.id, stage, fraction)
        if beat.lost.is_set():
            raise LeaseLost("the job's lease was lost")
        if store.cancel_requested(job.id):
            raise Cancelled("cancelled by the user")
        state["progress"] = overall_progress(stage, fraction, state["progress"])
        now = time.monotonic()
        if stage != state["stage"] or now - state["written"] >= 0.5:
            if not store.heartbeat(job.id, token, lease, progress=state["progress"], stage=stage):
                beat.lost.set()
                raise LeaseLost("the job's lease was lost")
            state["stage"], state["written"] = stage, now

    params = dict(job.params)
    options = dict(params.pop("options", {}))
    options.setdefault("max_duration", settings.max_audio_seconds)
    options.setdefault("max_pixels", settings.max_pixels)
    out = storage.result_path(job.id, job.attempts, ext=options.get("output_format") or "mp4")
    beat.start()
    try:
        inputs = {name: str(storage.path(rel)) for name, rel in job.inputs.items()}
        if "image" not in inputs:
            raise InvalidOption("the job has no image")
        from ..safety import job_scope

        with job_scope(job.id):                  # the watermark carries the job id's hash
            result = animate(inputs["image"], out, audio=inputs.get("audio"),
                             video=inputs.get("video"), text=params.get("text"),
                             pose=inputs.get("pose"),
                             transcript=params.get("transcript"), prompt=params.get("prompt"),
                             progress=progress, persona=inputs.get("persona"), **options)
    except LeaseLost:
        log.warning("job %s: lease lost, another worker runs it", job.id)
        return "lost"
    except Cancelled as exc:
        return _finish(store.fail(job.id, token, "cancelled", exc.message, status=CANCELLED),
                       CANCELLED)
    except EchomimicError as exc:
        return _finish(store.fail(job.id, token, exc.code, exc.message), "failed")
    except Exception as exc:  # a bug: keep the job and its inputs, report a stable code
        log.exception("job %s failed", job.id)
        return _finish(store.fail(job.id, token, "internal_error",
                                  f"internal error ({type(exc).__name__})"), "failed")
    finally:
        beat.stopped.set()
        beat.join()
    summary = {"n_frames": result.n_frames, "duration": result.duration, "fps": result.fps,
               "width": result.width, "height": result.height}
    if params.get("experiment"):                 # an A/B job: its quality figures go with it
        from .experiments import measure_job

        summary["quality"] = measure_job(store, job.id, result.output, inputs["image"])
    if store.complete(job.id, token, storage.relative(result.output), summary):
        return "completed"
    out.unlink(missing_ok=True)                  # another run owns the job now
    return "lost"


def _finish(written: bool, status: str) -> str:
    return status if written else "lost"


def run_job(job_id: str, *, store: JobStore, storage: LocalStorage, settings: Settings,
            worker: str | None = None, progress_hook: ProgressHook | None = None) -> str | None:
    """Claim the queued job ``job_id`` and run it (the entry point for a task queue).

    Returns the final status, or ``None`` when the job was not queued (already taken, finished
    or cancelled): delivering the same job twice is harmless.
    """
    job = store.claim(worker or default_worker_name(), settings.lease_seconds, job_id=job_id)
    if job is None:
        return None
    return run_claimed(job, store=store, storage=storage, settings=settings,
                       progress_hook=progress_hook)


class Worker:
    """A worker loop polling the store, without a broker (one job at a time; run several for
    parallelism). ``echomimic serve`` and ``echomimic worker`` use Celery instead."""

    def __init__(self, store: JobStore, storage: LocalStorage, settings: Settings, *,
                 name: str | None = None, poll_interval: float = 0.5,
                 progress_hook: ProgressHook | None = None):
        self.store, self.storage, self.settings = store, storage, settings
        self.name = name or default_worker_name()
        self.poll_interval = poll_interval
        self.progress_hook = progress_hook
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reap = 0.0

    def reap(self) -> list[str]:
        """Re-queue jobs of dead workers (at most every half lease)."""
        now = time.monotonic()
        if now - self._last_reap < self.settings.lease_seconds / 2:
            return []
        self._last_reap = now
        requeued = self.store.reap()
        for job_id in requeued:
            log.warning("job %s re-queued: its worker stopped responding", job_id)
        return requeued

    def run_once(self) -> str | None:
        """Reap, then claim and run one job. Returns its final status, ``None`` when idle."""
        self.reap()
        job = self.store.claim(self.name, self.settings.lease_seconds)
        if job is None:
            return None
        log.info("job %s: started by %s (attempt %d)", job.id, self.name, job.attempts)
        status = run_claimed(job, store=self.store, storage=self.storage, settings=self.settings,
                             progress_hook=self.progress_hook)
        log.info("job %s: %s", job.id, status)
        return status

    def run_forever(self) -> None:
        """Loop until :meth:`stop`."""
        while not self._stop.is_set():
            try:
                busy = self.run_once() is not None
            except Exception:  # the database went away for a moment: keep the worker alive
                log.exception("worker %s: loop error", self.name)
                busy = False
            if not busy:
                self._stop.wait(self.poll_interval)

    def start(self) -> threading.Thread:
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(target=self.run_forever, daemon=True,
                                        name=f"worker-{self.name}")
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop after the current job and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
