"""Service settings, read from ``ECHOMIMIC_*`` environment variables.

========================== ============================================== ====================
variable                   meaning                                        default
========================== ============================================== ====================
ECHOMIMIC_DATA_DIR         inputs, results and the SQLite database         ``./echomimic-data``
ECHOMIMIC_DB_URL           SQLAlchemy URL of the job store                 SQLite in DATA_DIR
ECHOMIMIC_AUTH             ``on`` (API keys) or ``off`` (local use)        ``on``
ECHOMIMIC_MAX_IMAGE_BYTES  largest photo upload / download                 20 MB
ECHOMIMIC_MAX_AUDIO_BYTES  largest audio upload / download                 50 MB
ECHOMIMIC_MAX_VIDEO_BYTES  largest video upload / download                 200 MB
ECHOMIMIC_MAX_AUDIO_SECONDS longest accepted speech                        600
ECHOMIMIC_MAX_PIXELS       largest accepted photo (width x height)         4096*4096
ECHOMIMIC_LEASE_SECONDS    job lease; a worker silent this long loses it   30
ECHOMIMIC_MAX_ATTEMPTS     runs of a job before it fails as ``worker_lost`` 3
ECHOMIMIC_URL_ALLOW        comma-separated hosts/CIDRs allowed for *_url    (none)
ECHOMIMIC_URL_TIMEOUT      seconds for one input download                  30
ECHOMIMIC_BROKER_URL       Celery broker (``redis://``, ``amqp://`` …)      SQLite in DATA_DIR
ECHOMIMIC_QUEUE            name of the broker queue of the jobs            ``echomimic``
ECHOMIMIC_REQUEUE_SECONDS  a queued job unclaimed this long is published    60
                           again (when the broker's queue is empty)
ECHOMIMIC_RATE_LIMIT       submissions per minute per API key (0: none)    60
ECHOMIMIC_MAX_ACTIVE_JOBS  queued + running jobs per API key (0: none)     20
ECHOMIMIC_S3_BUCKET        keep inputs and results in this S3 bucket        (none: data folder)
ECHOMIMIC_S3_PREFIX        key prefix inside the bucket                     (none)
ECHOMIMIC_S3_ENDPOINT_URL  S3-compatible endpoint (MinIO, Ceph, R2 …)       AWS
ECHOMIMIC_S3_REGION        region of the bucket                             boto3's default
ECHOMIMIC_SIGNING_KEY      secret of signed result links (local storage)    a file in DATA_DIR
ECHOMIMIC_RESULT_URL_TTL   seconds a result link stays valid                3600
ECHOMIMIC_RETENTION_DAYS   delete finished jobs older than this (0: never)  0
ECHOMIMIC_CLEANUP_INTERVAL seconds between two clean-ups of old jobs        3600
========================== ============================================== ====================

The analysis cache has its own variables (``ECHOMIMIC_CACHE_DIR``, ``ECHOMIMIC_CACHE_URL``), read
by :mod:`echomimic.analysis.cache`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from ..errors import InvalidOption

_MB = 1024 * 1024


def _flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "on", "true", "yes"):
        return True
    if v in ("0", "off", "false", "no"):
        return False
    raise InvalidOption(f"{name} must be on or off, got {value!r}")


def _num(env: Mapping[str, str], name: str, default: float, kind=int):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidOption(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise InvalidOption(f"{name} must be positive, got {raw!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number >= 0 (0 turns the limit off)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidOption(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise InvalidOption(f"{name} must be 0 or more, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the app, the store and the workers need to know."""

    data_dir: Path = Path("echomimic-data")
    db_url: str = ""                       # "" = sqlite:///<data_dir>/jobs.db
    auth: bool = True
    max_image_bytes: int = 20 * _MB
    max_audio_bytes: int = 50 * _MB
    max_video_bytes: int = 200 * _MB
    max_audio_seconds: float = 600.0
    max_pixels: int = 4096 * 4096
    lease_seconds: float = 30.0
    max_attempts: int = 3
    url_allow: tuple[str, ...] = field(default_factory=tuple)
    url_timeout: float = 30.0
    broker_url: str = ""                   # "" = sqla+sqlite:///<data_dir>/broker.db
    queue_name: str = "echomimic"
    requeue_seconds: float = 60.0
    rate_limit: int = 60                   # submissions per minute per key; 0 = no limit
    max_active_jobs: int = 20              # queued + running per key; 0 = no limit
    s3_bucket: str = ""                    # "" = files in the data folder
    s3_prefix: str = ""
    s3_endpoint_url: str = ""              # "" = AWS
    s3_region: str = ""
    signing_key: str = ""                  # "" = <data_dir>/signing.key (made on first use)
    result_url_ttl: float = 3600.0
    retention_days: int = 0                # 0 = keep finished jobs forever
    cleanup_interval: float = 3600.0
    stream_processes: bool = False         # live sessions' engines in processes of their own

    @property
    def celery_broker_url(self) -> str:
        """The Celery broker in use (an SQLite file in the data folder by default, so that
        ``echomimic serve`` needs no other server)."""
        return self.broker_url or f"sqla+sqlite:///{(Path(self.data_dir) / 'broker.db').resolve()}"

    @property
    def embedded_broker(self) -> bool:
        """Whether the broker is the default SQLite file (one host only)."""
        return not self.broker_url

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL in use (SQLite inside the data folder by default)."""
        return self.db_url or f"sqlite:///{(Path(self.data_dir) / 'jobs.db').resolve()}"

    def with_(self, **changes) -> "Settings":
        """A copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Settings from ``ECHOMIMIC_*`` variables (``env`` defaults to ``os.environ``)."""
        env = os.environ if env is None else env
        allow = tuple(s.strip() for s in env.get("ECHOMIMIC_URL_ALLOW", "").split(",") if s.strip())
        return cls(
            data_dir=Path(env.get("ECHOMIMIC_DATA_DIR", "echomimic-data")),
            db_url=env.get("ECHOMIMIC_DB_URL", ""),
            auth=_flag(env.get("ECHOMIMIC_AUTH", "on"), "ECHOMIMIC_AUTH"),
            max_image_bytes=_num(env, "ECHOMIMIC_MAX_IMAGE_BYTES", cls.max_image_bytes),
            max_audio_bytes=_num(env, "ECHOMIMIC_MAX_AUDIO_BYTES", cls.max_audio_bytes),
            max_video_bytes=_num(env, "ECHOMIMIC_MAX_VIDEO_BYTES", cls.max_video_bytes),
            max_audio_seconds=_num(env, "ECHOMIMIC_MAX_AUDIO_SECONDS", cls.max_audio_seconds, float),
            max_pixels=_num(env, "ECHOMIMIC_MAX_PIXELS", cls.max_pixels),
            lease_seconds=_num(env, "ECHOMIMIC_LEASE_SECONDS", cls.lease_seconds, float),
            max_attempts=_num(env, "ECHOMIMIC_MAX_ATTEMPTS", cls.max_attempts),
            url_allow=allow,
            url_timeout=_num(env, "ECHOMIMIC_URL_TIMEOUT", cls.url_timeout, float),
            broker_url=env.get("ECHOMIMIC_BROKER_URL", "").strip(),
            queue_name=env.get("ECHOMIMIC_QUEUE", "").strip() or cls.queue_name,
            requeue_seconds=_num(env, "ECHOMIMIC_REQUEUE_SECONDS", cls.requeue_seconds, float),
            rate_limit=_count(env, "ECHOMIMIC_RATE_LIMIT", cls.rate_limit),
            max_active_jobs=_count(env, "ECHOMIMIC_MAX_ACTIVE_JOBS", cls.max_active_jobs),
            s3_bucket=env.get("ECHOMIMIC_S3_BUCKET", "").strip(),
            s3_prefix=env.get("ECHOMIMIC_S3_PREFIX", "").strip(),
            s3_endpoint_url=env.get("ECHOMIMIC_S3_ENDPOINT_URL", "").strip(),
            s3_region=env.get("ECHOMIMIC_S3_REGION", "").strip(),
            signing_key=env.get("ECHOMIMIC_SIGNING_KEY", "").strip(),
            result_url_ttl=_num(env, "ECHOMIMIC_RESULT_URL_TTL", cls.result_url_ttl, float),
            retention_days=_count(env, "ECHOMIMIC_RETENTION_DAYS", cls.retention_days),
            cleanup_interval=_num(env, "ECHOMIMIC_CLEANUP_INTERVAL", cls.cleanup_interval, float),
            stream_processes=_flag(env.get("ECHOMIMIC_STREAM_PROCESSES", "off"),
                                   "ECHOMIMIC_STREAM_PROCESSES"),
        )
