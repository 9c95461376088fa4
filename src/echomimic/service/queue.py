"""The task queue: Celery carries job ids from the API to the workers.

The job store stays the source of truth; a message only says "job ``<id>`` may be ready to run".
The Celery task calls :func:`~echomimic.service.worker.run_job`, whose claim is a conditional
``UPDATE``, so a duplicate delivery (or a message for a finished or cancelled job) is a no-op.
Recovery is the store's: a :class:`Maintenance` loop, run by ``echomimic serve`` and by every
``echomimic worker``, re-queues jobs whose lease expired (their worker died) and publishes them
again, and publishes again queued jobs whose message was lost (an API restart, a broker restart).

Brokers:

* by default an SQLite file in the data folder (kombu's SQLAlchemy transport), so
  ``echomimic serve`` needs no other server; its workers are threads of the same process
  (:class:`EmbeddedWorker`), and ``echomimic worker`` processes on the same host may join;
* ``ECHOMIMIC_BROKER_URL=redis://…`` or ``amqp://…`` to run ``echomimic worker`` on other
  machines (they need the same database URL and the same storage).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import uuid
from typing import Any, Callable, Iterator

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as _SQLTransport

from .settings import Settings
from .storage import LocalStorage, make_storage
from .store import JobStore

log = logging.getLogger("echomimic.service.queue")

TASK_NAME = "echomimic.run_job"
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
#: the scheme of the embedded broker (kombu's SQLAlchemy transport, polled every 0.2 s)
EMBEDDED_SCHEME = "echomimic-sqla"


class EmbeddedTransport(_SQLTransport):
    """kombu's SQLAlchemy transport, polled more often than its default of once a second."""

    polling_interval = 0.2


TRANSPORT_ALIASES.setdefault(EMBEDDED_SCHEME, f"{__name__}:EmbeddedTransport")


def _broker_url(settings: Settings) -> str:
    url = settings.celery_broker_url
    if settings.embedded_broker:
        return f"{EMBEDDED_SCHEME}+{url.split('+', 1)[1]}"
    return url


class _Resources:
    """The store and storage a task uses, made once per process (a forked pool child makes its
    own, never reusing its parent's database connections)."""

    def __init__(self, settings: Settings, store: JobStore | None, storage: LocalStorage | None,
                 progress_hook: Callable[[str, str, float], None] | None):
        self.settings, self.progress_hook = settings, progress_hook
        self._store, self._storage = store, storage
        self._pid = os.getpid() if store is not None else None
        self._lock = threading.Lock()

    def get(self) -> tuple[JobStore, LocalStorage]:
        with self._lock:
            if self._store is None or self._pid != os.getpid():
                self._store = JobStore(self.settings.database_url,
                                       max_attempts=self.settings.max_attempts)
                self._storage = make_storage(self.settings)
                self._pid = os.getpid()
            if self._storage is None:
                self._storage = make_storage(self.settings)
            return self._store, self._storage


def make_celery(settings: Settings, *, store: JobStore | None = None,
                storage: LocalStorage | None = None,
                progress_hook: Callable[[str, str, float], None] | None = None) -> Celery:
    """A Celery app for ``settings`` with the ``echomimic.run_job`` task registered.

    ``store``/``storage`` are used by the task when given (embedded workers share the API's);
    otherwise each worker process opens its own from ``settings``. ``progress_hook`` is passed to
    :func:`~echomimic.service.worker.run_job`.
    """
    app = Celery("echomimic", broker=_broker_url(settings), set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue_name,
        task_default_exchange=settings.queue_name,
        task_default_routing_key=settings.queue_name,
        task_serializer="json", accept_content=["json"],
        task_ignore_result=True, result_backend=None,
        # a worker holds only the messages of the jobs it runs (none waits behind a busy worker);
        # a job whose worker died is recovered through the store's lease, not the broker
        task_acks_late=True, worker_prefetch_multiplier=1, task_reject_on_worker_lost=False,
        worker_enable_remote_control=False, worker_send_task_events=False,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False,
        broker_connection_retry_on_startup=True,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2,
                                   "interval_step": 0.5, "interval_max": 2.0},
    )
    resources = _Resources(settings, store, storage, progress_hook)
    app.echomimic_resources = resources  # type: ignore[attr-defined]

    @app.task(name=TASK_NAME, ignore_result=True, shared=False)   # this app only
    def run_job_task(job_id: str) -> str | None:
        """Run the queued job ``job_id`` (a no-op when it is not queued any more)."""
        from .worker import default_worker_name, run_job

        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            log.error("ignored a message with a malformed job id: %r", job_id)
            return None
        job_store, job_storage = resources.get()
        status = run_job(job_id, store=job_store, storage=job_storage, settings=settings,
                         worker=default_worker_name(), progress_hook=resources.progress_hook)
        if status is not None:
            log.info("job %s: %s", job_id, status)
        return status

    return app


class JobQueue:
    """Publishes job ids to the broker and measures its queue."""

    def __init__(self, settings: Settings, celery_app: Celery | None = None, **task_options: Any):
        self.settings = settings
        self.celery = celery_app or make_celery(settings, **task_options)

    @property
    def name(self) -> str:
        return self.settings.queue_name

    def publish(self, job_id: str) -> bool:
        """Send ``job_id`` to the workers; ``False`` (logged) when the broker cannot be reached:
        the job stays queued in the store and :class:`Maintenance` publishes it again later."""
        try:
            self.celery.send_task(TASK_NAME, args=[job_id], queue=self.name)
            return True
        except Exception as exc:  # broker down: the store keeps the job, the sweep retries
            log.warning("could not publish job %s (%s: %s); it will be published again",
                        job_id, type(exc).__name__, exc)
            return False

    def depth(self) -> int | None:
        """Messages waiting in the broker's queue, or ``None`` when it cannot be measured."""
        try:
            with self.celery.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1)
                queue = self.celery.amqp.queues[self.name]
                declared = queue(conn.default_channel).queue_declare()
                return int(declared.message_count)
        except Exception as exc:  # the broker is down or cannot report it
            log.debug("queue depth unavailable: %s", exc)
            return None

    def close(self) -> None:
        try:
            self.celery.close()
        except Exception:  # closing a broken connection pool
            pass


class Maintenance:
    """Periodic recovery: reap expired leases (and publish the re-queued jobs again), and publish
    again queued jobs whose message was lost.

    A queued job is published again when its id was last published more than
    ``settings.requeue_seconds`` ago and the broker's queue is empty (its message cannot be
    waiting there), or more than ten times that long ago in any case. Duplicates are harmless.
    """

    def __init__(self, store: JobStore, queue: JobQueue, settings: Settings, *,
                 interval: float | None = None):
        self.store, self.queue, self.settings = store, queue, settings
        self.interval = interval or max(0.2, min(settings.lease_seconds / 3.0, 5.0))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def republish_queued(self) -> list[str]:
        """Publish the id of every queued job again (at startup: messages may have been lost)."""
        ids = self.store.stale_queued(0.0, limit=100000)
        return self._publish(ids)

    def _publish(self, ids: list[str]) -> list[str]:
        sent = [job_id for job_id in ids if self.queue.publish(job_id)]
        self.store.mark_enqueued(sent)
        return sent

    def tick(self) -> dict[str, list[str]]:
        """One round: reap, then look for queued jobs whose message may be lost."""
        reaped = self.store.reap()
        for job_id in reaped:
            log.warning("job %s re-queued: its worker stopped responding", job_id)
        republished = self._publish(reaped)
        wait = self.settings.requeue_seconds
        stale = self.store.stale_queued(wait)
        if stale:
            depth = self.queue.depth()
            if depth is not None and depth > 0:
                stale = self.store.stale_queued(wait * 10)
            if stale:
                log.warning("publishing %d queued job(s) again (no message seen for %.0f s)",
                            len(stale), wait)
                republished += self._publish(stale)
        return {"reaped": reaped, "republished": republished}

    def run_forever(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the database or the broker is away for a moment
                log.exception("maintenance round failed")

    def start(self, *, republish: bool = False) -> "Maintenance":
        """Run in a daemon thread; ``republish``: first publish every queued job again."""
        if republish:
            try:
                n = len(self.republish_queued())
                if n:
                    log.info("published %d queued job(s) again at startup", n)
            except Exception:
                log.exception("could not publish the queued jobs at startup")
        self._thread = threading.Thread(target=self.run_forever, daemon=True,
                                        name="echomimic-maintenance")
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class EmbeddedWorker:
    """A Celery worker inside this process: a thread consuming the queue, running up to
    ``concurrency`` jobs at once in a thread pool (``echomimic serve --workers N``)."""

    def __init__(self, queue: JobQueue, concurrency: int = 1, *, pool: str = "threads",
                 loglevel: str = "WARNING"):
        from celery.worker import WorkController

        ready = threading.Event()

        class _Controller(WorkController):
            def on_consumer_ready(self, consumer):  # noqa: ANN001
                ready.set()

        self._ready = ready
        self.queue = queue
        app = queue.celery
        app.finalize()
        # the pool's threads trace tasks with the process's default app: this one (so one
        # embedded worker's app per process at a time)
        app.set_default()
        app.set_current()
        self.controller = _Controller(
            app=app, concurrency=max(1, int(concurrency)), pool=pool, loglevel=loglevel,
            hostname=f"embedded-{uuid.uuid4().hex[:6]}@{socket.gethostname()}",
            queues=[queue.name], without_heartbeat=True, without_mingle=True,
            without_gossip=True)
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> "EmbeddedWorker":
        """Start consuming; returns once the worker listens to the queue."""
        self._thread = threading.Thread(target=self.controller.start, daemon=True,
                                        name="echomimic-celery-worker")
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the embedded Celery worker did not start")
        return self

    def stop(self, timeout: float | None = 30.0, *, wait_for_jobs: bool = True) -> None:
        """Stop consuming. ``wait_for_jobs``: let running jobs finish (else they are left to the
        reaper of the next server, through their lease)."""
        try:
            if wait_for_jobs:
                self.controller.stop()
            else:
                self.controller.terminate()
        except Exception:  # stopping a half-started worker
            log.exception("stopping the embedded worker failed")
        if self._thread is not None:
            self._thread.join(timeout)


def run_worker(settings: Settings, *, concurrency: int = 1, pool: str = "prefork",
               loglevel: str = "INFO", hostname: str | None = None) -> None:
    """Run a Celery worker in this process until it is stopped (``echomimic worker``).

    It also runs :class:`Maintenance` (reaper and re-publishing), so recovery does not depend on
    the API process.
    """
    from celery import signals

    if not logging.getLogger().handlers:
        logging.basicConfig(level=loglevel,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    queue = JobQueue(settings)
    store = JobStore(settings.database_url, max_attempts=settings.max_attempts)
    maintenance = Maintenance(store, queue, settings)

    def _ready(**_kwargs: Any) -> None:
        maintenance.start()

    signals.worker_ready.connect(_ready, weak=False)
    queue.celery.set_default()                 # pool threads and children trace with this app
    queue.celery.set_current()
    worker = queue.celery.Worker(
        concurrency=max(1, int(concurrency)), pool_cls=pool, loglevel=loglevel,
        hostname=hostname or f"echomimic-{os.getpid()}@{socket.gethostname()}",
        queues=[queue.name], without_heartbeat=True, without_mingle=True, without_gossip=True,
        quiet=True)
    try:
        worker.start()
    finally:
        maintenance.stop(timeout=2)
        store.close()
    code = getattr(worker, "exitcode", 0) or 0
    if code:
        raise SystemExit(code)



#: buckets of the run time of a job (seconds) and of its real-time factor
RENDER_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class QueueMetrics:
    """A Prometheus collector: the broker's queue depth and, from the job store (so that it
    counts the jobs of every worker, on any machine), a histogram of the run time of completed
    jobs and of their real-time factor (run time / video duration; under 1 is faster than real
    time)."""

    def __init__(self, store: JobStore, queue: JobQueue | None):
        from prometheus_client import Histogram

        self.store, self.queue = store, queue
        self.render = Histogram("echomimic_render_seconds",
                                "Run time of completed jobs (claim to video), seconds",
                                buckets=RENDER_BUCKETS, registry=None)
        self.rtf = Histogram("echomimic_realtime_factor",
                             "Run time / video duration of completed jobs",
                             buckets=RTF_BUCKETS, registry=None)
        self._after = 0.0
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def _sync(self) -> None:
        """Observe the jobs completed since the last scrape."""
        with self._lock:
            # a little overlap, with the ids seen, catches completions written out of order
            rows = self.store.completed_since(self._after - 5.0)
            for job_id, finished, seconds, duration in rows:
                if job_id in self._seen:
                    continue
                self.render.observe(seconds)
                if duration > 0:
                    self.rtf.observe(seconds / duration)
                self._after = max(self._after, finished)
            self._seen = {j for j, finished, _, _ in rows if finished > self._after - 5.0}

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        try:
            self._sync()
        except Exception:  # the database is away: report what is known
            log.exception("could not read completed jobs for the metrics")
        yield from self.render.collect()
        yield from self.rtf.collect()
        depth = self.queue.depth() if self.queue is not None else None
        g = GaugeMetricFamily("echomimic_queue_depth",
                              "Messages waiting in the broker's queue (-1: unknown)")
        g.add_metric([], float(depth) if depth is not None else -1.0)
        yield g


@contextlib.contextmanager
def background_work(app, workers: int = 1) -> Iterator[list[EmbeddedWorker]]:
    """While the block runs (``echomimic serve``): publish the queued jobs again (their messages
    may be lost), run :class:`Maintenance`, and ``workers`` embedded Celery worker threads on
    the app's queue (none with ``workers=0``: separate ``echomimic worker`` processes run the
    jobs then). On exit, running jobs are left to the reaper (their lease expires)."""
    store, queue, settings = app.state.store, app.state.queue, app.state.settings
    maintenance = Maintenance(store, queue, settings).start(republish=True)
    pool: list[EmbeddedWorker] = []
    try:
        if workers > 0:
            pool.append(EmbeddedWorker(queue, concurrency=workers).start())
        yield pool
    finally:
        maintenance.stop(timeout=2)
        for worker in pool:
            worker.stop(timeout=2, wait_for_jobs=False)
