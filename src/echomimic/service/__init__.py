"""The REST service: a FastAPI app, a durable job store, a Celery queue, storage and workers.

``create_app(settings)`` builds the app; :mod:`~echomimic.service.queue` publishes jobs to Celery
(an embedded SQLite broker by default, Redis or RabbitMQ by ``ECHOMIMIC_BROKER_URL``) and runs the
maintenance loop (reaper, re-publishing); :func:`~echomimic.service.worker.run_job` runs one job
and is what the Celery task calls. The job store, not the broker, owns recovery. Install with
``pip install "echomimic[service]"``.
"""

from __future__ import annotations

from .settings import Settings

__all__ = ["Settings"]
