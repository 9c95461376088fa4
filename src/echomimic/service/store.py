"""The durable job store (SQLAlchemy 2; SQLite by default, any SQL database by URL).

The store owns the lifecycle and recovery of jobs:

``queued`` --claim--> ``running`` --complete--> ``completed``
                                  --fail------> ``failed``
                                  --cancel----> ``cancelled``
``running`` with an expired lease --reap--> ``queued`` again (or ``failed`` with
``worker_lost`` after ``max_attempts`` runs).

A claim is one conditional ``UPDATE … WHERE status='queued'``, so two workers never run the same
job at once. A worker holds a *lease* that it renews by heartbeats; every write of a worker is
guarded by its lease token, so a worker that lost its lease (it was presumed dead and the job was
handed to another) cannot complete, fail or overwrite the job: each job completes exactly once.

A task queue (Celery) only carries job ids: ``enqueued_at`` records when a job's id was last
published, so that a queued job whose message was lost can be found and published again
(:meth:`JobStore.stale_queued`); a duplicate message is harmless, because the claim is conditional.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (Boolean, Float, Integer, String, Text, UniqueConstraint, and_,
                        create_engine, event, func, inspect, or_, select, text, update)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
TERMINAL = (COMPLETED, FAILED, CANCELLED)
KEY_PREFIX = "em_"


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("owner", "idempotency_key", name="uq_jobs_idempotency"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=QUEUED)
    params: Mapped[str] = mapped_column(Text, default="{}")      # JSON: animate() arguments
    inputs: Mapped[str] = mapped_column(Text, default="{}")      # JSON: name -> stored file
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(32), default="")
    result: Mapped[str | None] = mapped_column(String(300), nullable=True)
    summary: Mapped[str] = mapped_column(Text, default="{}")     # JSON: frames, duration …
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    enqueued_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


@dataclass(frozen=True)
class Job:
    """A snapshot of one job record."""

    id: str
    owner: str
    status: str
    params: dict[str, Any]
    inputs: dict[str, str]
    progress: float
    stage: str
    result: str | None
    summary: dict[str, Any]
    error_code: str | None
    error_message: str | None
    cancel_requested: bool
    attempts: int
    lease_token: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def of(cls, row: JobRow) -> "Job":
        return cls(id=row.id, owner=row.owner, status=row.status, params=json.loads(row.params),
                   inputs=json.loads(row.inputs), progress=row.progress, stage=row.stage,
                   result=row.result, summary=json.loads(row.summary or "{}"),
                   error_code=row.error_code, error_message=row.error_message,
                   cancel_requested=bool(row.cancel_requested), attempts=row.attempts,
                   lease_token=row.lease_token, created_at=row.created_at,
                   started_at=row.started_at, finished_at=row.finished_at)

    @property
    def eta_s(self) -> float | None:
        """Seconds left, estimated from the elapsed time and the progress of the current run."""
        if self.status != RUNNING or self.started_at is None or self.progress < 0.05:
            return None
        elapsed = max(0.0, time.time() - self.started_at)
        return round(elapsed * (1.0 - self.progress) / self.progress, 1)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None


def hash_key(key: str) -> str:
    """SHA-256 of an API key (keys are random 256-bit tokens, so a plain hash is enough)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class JobStore:
    """Job and API-key records, with atomic claims, leases and a reaper."""

    def __init__(self, url: str, *, max_attempts: int = 3):
        self.max_attempts = int(max_attempts)
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        Base.metadata.create_all(self.engine)
        self._migrate()
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def _migrate(self) -> None:
        """Add the columns that databases made by earlier versions lack."""
        columns = {c["name"] for c in inspect(self.engine).get_columns("jobs")}
        if "enqueued_at" not in columns:
            with self.engine.begin() as conn:
                conn.execute(text("ALTER TABLE jobs ADD COLUMN enqueued_at FLOAT"))

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Raise when the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- jobs -------------------------------------------------------------------------------------

    def find_idempotent(self, owner: str, key: str) -> Job | None:
        """The job ``owner`` created earlier with ``Idempotency-Key: key``, if any."""
        with self._session() as s:
            row = s.scalar(select(JobRow).where(JobRow.owner == owner, JobRow.idempotency_key == key))
            return Job.of(row) if row else None

    def create_job(self, owner: str, params: dict[str, Any], inputs: dict[str, str], *,
                   job_id: str | None = None, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Queue a job. Returns ``(job, created)``; with an idempotency key already used by
        ``owner``, the existing job and ``False``."""
        now = time.time()
        row = JobRow(id=job_id or uuid.uuid4().hex, owner=owner, idempotency_key=idempotency_key,
                     status=QUEUED, params=json.dumps(params, sort_keys=True),
                     inputs=json.dumps(inputs, sort_keys=True), created_at=now, enqueued_at=now,
                     progress=0.0, stage="", summary="{}", cancel_requested=False, attempts=0)
        try:
            with self._session() as s, s.begin():
                s.add(row)
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = self.find_idempotent(owner, idempotency_key)
            if existing is None:
                raise
            return existing, False
        return Job.of(row), True

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or ``None`` when it does not exist or belongs to another owner."""
        with self._session() as s:
            row = s.get(JobRow, job_id)
            if row is None or (owner is not None and row.owner != owner):
                return None
            return Job.of(row)

    def list_jobs(self, owner: str, *, status: str | None = None, limit: int = 20,
                  after: tuple[float, str] | None = None) -> list[Job]:
        """``owner``'s jobs, newest first; ``after``: ``(created_at, id)`` of the last one seen."""
        q = select(JobRow).where(JobRow.owner == owner)
        if status is not None:
            q = q.where(JobRow.status == status)
        if after is not None:
            t, last = after
            q = q.where(or_(JobRow.created_at < t, and_(JobRow.created_at == t, JobRow.id < last)))
        q = q.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(int(limit))
        with self._session() as s:
            return [Job.of(r) for r in s.scalars(q)]

    def count_by_status(self) -> dict[str, int]:
        with self._session() as s:
            rows = s.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all()
        return {status: int(n) for status, n in rows}

    def count_active(self, owner: str) -> int:
        """How many of ``owner``'s jobs are queued or running."""
        with self._session() as s:
            return int(s.scalar(select(func.count()).select_from(JobRow).where(
                JobRow.owner == owner, JobRow.status.in_((QUEUED, RUNNING)))) or 0)

    def stale_queued(self, older_than: float, *, now: float | None = None,
                     limit: int = 1000) -> list[str]:
        """Queued jobs whose id was last published more than ``older_than`` seconds ago (oldest
        first): their message may have been lost."""
        now = time.time() if now is None else now
        since = func.coalesce(JobRow.enqueued_at, JobRow.created_at)
        with self._session() as s:
            return list(s.scalars(select(JobRow.id).where(JobRow.status == QUEUED,
                                                          since <= now - older_than)
                                  .order_by(JobRow.created_at, JobRow.id).limit(limit)))

    def mark_enqueued(self, job_ids: list[str], *, now: float | None = None) -> None:
        """Record that the ids of these (queued) jobs were published now."""
        if not job_ids:
            return
        now = time.time() if now is None else now
        with self._session() as s, s.begin():
            s.execute(update(JobRow).where(JobRow.id.in_(job_ids), JobRow.status == QUEUED)
                      .values(enqueued_at=now))

    def completed_since(self, after: float,
                        limit: int = 10000) -> list[tuple[str, float, float, float]]:
        """``(id, finished_at, run seconds, video seconds)`` of the jobs completed after
        ``after`` (a ``finished_at`` time), oldest first."""
        with self._session() as s:
            rows = s.execute(select(JobRow.id, JobRow.started_at, JobRow.finished_at,
                                    JobRow.summary)
                             .where(JobRow.status == COMPLETED, JobRow.finished_at > after)
                             .order_by(JobRow.finished_at).limit(limit)).all()
        out = []
        for job_id, started, finished, summary in rows:
            try:
                duration = float(json.loads(summary or "{}").get("duration") or 0.0)
            except (ValueError, TypeError, AttributeError):
                duration = 0.0
            seconds = max(0.0, float(finished) - float(started or finished))
            out.append((job_id, float(finished), seconds, duration))
        return out

    def claim(self, worker: str, lease_seconds: float, job_id: str | None = None) -> Job | None:
        """Atomically take the oldest queued job (or ``job_id``) for ``worker``; ``None`` if none.

        The returned job's ``lease_token`` must be passed to every later call for it.
        """
        for _ in range(20):
            with self._session() as s:
                if job_id is None:
                    candidate = s.scalar(select(JobRow.id).where(JobRow.status == QUEUED)
                                         .order_by(JobRow.created_at, JobRow.id).limit(1))
                else:
                    candidate = job_id
                if candidate is None:
                    return None
                now = time.time()
                token = uuid.uuid4().hex
                res = s.execute(update(JobRow)
                                .where(JobRow.id == candidate, JobRow.status == QUEUED)
                                .values(status=RUNNING, lease_token=token, worker=worker,
                                        lease_expires_at=now + lease_seconds, started_at=now,
                                        attempts=JobRow.attempts + 1, progress=0.0, stage=""))
                s.commit()
                if res.rowcount == 1:
                    return Job.of(s.get(JobRow, candidate, populate_existing=True))
            if job_id is not None:
                return None                      # taken by someone else (or not queued)
        return None

    def _leased(self, job_id: str, token: str):
        return update(JobRow).where(JobRow.id == job_id, JobRow.status == RUNNING,
                                    JobRow.lease_token == token)

    def heartbeat(self, job_id: str, token: str, lease_seconds: float, *,
                  progress: float | None = None, stage: str | None = None) -> bool:
        """Renew the lease (and record progress). ``False`` when the lease was lost."""
        values: dict[str, Any] = {"lease_expires_at": time.time() + lease_seconds}
        if progress is not None:
            values["progress"] = float(min(1.0, max(0.0, progress)))
        if stage is not None:
            values["stage"] = stage
        with self._session() as s, s.begin():
            return s.execute(self._leased(job_id, token).values(**values)).rowcount == 1

    def cancel_requested(self, job_id: str) -> bool:
        with self._session() as s:
            return bool(s.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def complete(self, job_id: str, token: str, result: str, summary: dict[str, Any]) -> bool:
        """Mark the job completed with its result; ``False`` (nothing changed) without the lease."""
        with self._session() as s, s.begin():
            return s.execute(self._leased(job_id, token).values(
                status=COMPLETED, result=result, summary=json.dumps(summary, sort_keys=True),
                progress=1.0, stage="done", finished_at=time.time(), lease_token=None,
                lease_expires_at=None)).rowcount == 1

    def fail(self, job_id: str, token: str, code: str, message: str, *,
             status: str = FAILED) -> bool:
        """Mark the job failed (or ``cancelled``) with an error; ``False`` without the lease.
        The inputs stay stored."""
        with self._session() as s, s.begin():
            return s.execute(self._leased(job_id, token).values(
                status=status, error_code=code, error_message=message, finished_at=time.time(),
                lease_token=None, lease_expires_at=None)).rowcount == 1

    def cancel(self, job_id: str, owner: str | None = None) -> Job | None:
        """Cancel a job: a queued one at once, a running one by flagging it (its worker stops
        at its next progress report). A finished job is left as it is."""
        with self._session() as s, s.begin():
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or (owner is not None and row.owner != owner):
                return None
            if row.status == QUEUED:
                row.status, row.finished_at = CANCELLED, time.time()
                row.error_code, row.error_message = "cancelled", "cancelled by the user"
                row.cancel_requested = True
            elif row.status == RUNNING:
                row.cancel_requested = True
            s.flush()
            return Job.of(row)

    def reap(self, now: float | None = None) -> list[str]:
        """Re-queue running jobs whose lease expired (their worker died or hung). A job that
        already ran ``max_attempts`` times fails with ``worker_lost``; a job whose cancel was
        requested becomes ``cancelled``. Returns the ids that were re-queued."""
        now = time.time() if now is None else now
        requeued: list[str] = []
        with self._session() as s, s.begin():
            rows = s.scalars(select(JobRow).where(JobRow.status == RUNNING,
                                                  JobRow.lease_expires_at < now)).all()
            for row in rows:
                res = s.execute(update(JobRow).where(JobRow.id == row.id, JobRow.status == RUNNING,
                                                     JobRow.lease_token == row.lease_token)
                                .values(**self._reaped_values(row, now)))
                if res.rowcount == 1 and not row.cancel_requested and row.attempts < self.max_attempts:
                    requeued.append(row.id)
        return requeued

    def _reaped_values(self, row: JobRow, now: float) -> dict[str, Any]:
        common = {"lease_token": None, "lease_expires_at": None, "worker": None}
        if row.cancel_requested:
            return {**common, "status": CANCELLED, "finished_at": now, "error_code": "cancelled",
                    "error_message": "cancelled by the user"}
        if row.attempts >= self.max_attempts:
            return {**common, "status": FAILED, "finished_at": now, "error_code": "worker_lost",
                    "error_message": f"the job's worker stopped responding {row.attempts} times"}
        return {**common, "status": QUEUED, "progress": 0.0, "stage": "", "started_at": None,
                "enqueued_at": now}

    # -- API keys ---------------------------------------------------------------------------------

    def create_key(self, name: str) -> tuple[ApiKey, str]:
        """A new API key: its record and the secret (shown once; only its hash is stored)."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(id=uuid.uuid4().hex, name=name, key_hash=hash_key(secret),
                        prefix=secret[:10], created_at=time.time(), revoked_at=None)
        with self._session() as s, s.begin():
            s.add(row)
        return self._key(row), secret

    def list_keys(self) -> list[ApiKey]:
        with self._session() as s:
            return [self._key(r) for r in s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke by id, or by a unique id prefix; ``False`` when there is no such active key."""
        with self._session() as s, s.begin():
            rows = s.scalars(select(ApiKeyRow).where(ApiKeyRow.id.startswith(key_id),
                                                     ApiKeyRow.revoked_at.is_(None))).all()
            if len(rows) != 1:
                return False
            rows[0].revoked_at = time.time()
            return True

    def verify_key(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is, else ``None``."""
        with self._session() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(secret),
                                                   ApiKeyRow.revoked_at.is_(None)))
            return self._key(row) if row else None

    @staticmethod
    def _key(row: ApiKeyRow) -> ApiKey:
        return ApiKey(id=row.id, name=row.name, prefix=row.prefix, created_at=row.created_at,
                      revoked_at=row.revoked_at)
