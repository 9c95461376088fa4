"""The REST service: a FastAPI app, a durable job store, local result storage and workers.

``create_app(settings)`` builds the app; :class:`~echomimic.service.worker.Worker` runs queued
jobs; :func:`~echomimic.service.worker.run_job` runs one claimed job (the unit a task queue can
call). Install with ``pip install "echomimic[service]"``.
"""

from __future__ import annotations

from .settings import Settings

__all__ = ["Settings"]
