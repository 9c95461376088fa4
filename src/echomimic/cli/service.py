"""Commands of the REST service and the web UI: ``serve``, ``worker``, ``keys``, ``cleanup``
and ``ui``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InvalidOption
from ._common import _fail, _handles_errors, app


# ------------------------------------------------------------------------------------------------
# service: serve, worker, keys
# ------------------------------------------------------------------------------------------------


def _service_settings(data_dir: Path | None):
    """Service settings from the environment, with the command line's data folder."""
    try:
        from ..service.settings import Settings
    except ImportError:  # pragma: no cover - the extra is not installed
        raise _fail("the service needs its extra: pip install 'echomimic[service]'") from None
    settings = Settings.from_env()
    return settings.with_(data_dir=data_dir) if data_dir is not None else settings


def _job_store(settings):
    try:
        from ..service.store import JobStore
    except ImportError:  # pragma: no cover - the extra is not installed
        raise _fail("the service needs its extra: pip install 'echomimic[service]'") from None
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return JobStore(settings.database_url, max_attempts=settings.max_attempts)


DataDirOption = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Folder of the jobs, results and SQLite database "
                       "(default: $ECHOMIMIC_DATA_DIR or ./echomimic-data).")]


@app.command("serve")
@_handles_errors
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Jobs run at once by the Celery worker threads of "
                                              "this process (0: API only; `echomimic worker` "
                                              "processes run the jobs).", min=0, max=64)] = 1,
    data_dir: DataDirOption = None,
) -> None:
    """Run the REST API (FastAPI + uvicorn) with embedded Celery workers."""
    import logging

    settings = _service_settings(data_dir)
    try:
        import uvicorn

        from ..service.app import create_app
        from ..service.queue import background_work
    except ImportError:  # pragma: no cover - the extra is not installed
        raise _fail("the service needs its extra: pip install 'echomimic[service]'") from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not settings.auth and host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(f"warning: authentication is off and the server listens on {host}\n")
    application = create_app(settings)
    # a running job is re-queued by the reaper of the next server or of a worker
    with background_work(application, workers):
        uvicorn.run(application, host=host, port=port, log_level="info")


@app.command("worker")
@_handles_errors
def worker_cmd(
    concurrency: Annotated[int, typer.Option(help="Jobs run at once.", min=1, max=64)] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork (processes), threads or solo "
                                           "(one job at a time in this process).")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    data_dir: DataDirOption = None,
) -> None:
    """Run jobs of the REST service from its queue ($ECHOMIMIC_BROKER_URL: Redis or RabbitMQ
    across machines; by default the SQLite broker in the data folder, this machine only)."""
    settings = _service_settings(data_dir)
    if pool not in ("prefork", "threads", "solo"):
        raise InvalidOption(f"--pool must be prefork, threads or solo, got {pool!r}")
    try:
        from ..service.queue import run_worker
    except ImportError:  # pragma: no cover - the extra is not installed
        raise _fail("the service needs its extra: pip install 'echomimic[service]'") from None
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    run_worker(settings, concurrency=concurrency, pool=pool, loglevel=loglevel.upper())


keys_app = typer.Typer(help="Create, list and revoke API keys of the REST service.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
@_handles_errors
def keys_create_cmd(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    data_dir: DataDirOption = None,
) -> None:
    """Create a key; the key itself is printed once, on the last line."""
    if not name.strip():
        raise InvalidOption("the key needs a --name")
    store = _job_store(_service_settings(data_dir))
    key, secret = store.create_key(name.strip())
    sys.stdout.write(f"created key {key.id} ({key.name}); keep it secret, it is not shown again:\n")
    sys.stdout.write(secret + "\n")


@keys_app.command("list")
@_handles_errors
def keys_list_cmd(data_dir: DataDirOption = None) -> None:
    """List keys (id, start of the key, name, created, revoked)."""
    from datetime import datetime, timezone

    def when(t):
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M") if t else "-"

    for k in _job_store(_service_settings(data_dir)).list_keys():
        sys.stdout.write(f"{k.id}  {k.prefix}…  {k.name}  created {when(k.created_at)}  "
                         f"revoked {when(k.revoked_at)}\n")


@keys_app.command("revoke")
@_handles_errors
def keys_revoke_cmd(
    key_id: Annotated[str, typer.Argument(help="The key's id (or a unique start of it).")],
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    if not _job_store(_service_settings(data_dir)).revoke_key(key_id.strip()):
        raise InvalidOption(f"no single active key with id {key_id!r}")
    sys.stdout.write(f"revoked {key_id}\n")


# ------------------------------------------------------------------------------------------------
# cleanup
# ------------------------------------------------------------------------------------------------


@app.command("cleanup")
@_handles_errors
def cleanup_cmd(
    days: Annotated[Optional[float], typer.Option(help="Delete jobs finished more than this many "
                                                       "days ago (default: "
                                                       "$ECHOMIMIC_RETENTION_DAYS).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be "
                                                            "deleted.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Delete the inputs, results and records of old finished jobs of the REST service."""
    settings = _service_settings(data_dir)
    from ..service.retention import cleanup
    from ..service.storage import make_storage

    days = settings.retention_days if days is None else days
    if not days or days <= 0:
        raise InvalidOption("give --days or set ECHOMIMIC_RETENTION_DAYS (above 0)")
    report = cleanup(_job_store(settings), make_storage(settings), older_than_days=days,
                     dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    sys.stdout.write(f"{verb} {len(report.jobs)} finished jobs and {len(report.orphans)} "
                     f"orphaned file sets older than {days:g} days\n")


# ------------------------------------------------------------------------------------------------
# ui: the web page (Gradio)
# ------------------------------------------------------------------------------------------------


@app.command("ui")
@_handles_errors
def ui_cmd(
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 7860,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine "
                                           "only).")] = "127.0.0.1",
    server: Annotated[Optional[str], typer.Option(
        "--server", help="Run the jobs on this echomimic REST server (e.g. "
        "http://127.0.0.1:8000) instead of in this process; its API key comes from "
        "$ECHOMIMIC_API_KEY or the page.")] = None,
) -> None:
    """Serve the web UI (Gradio): upload a photo, give speech, a video or text, get the video."""
    try:
        import gradio  # noqa: F401
    except ImportError:  # the extra is not installed
        raise _fail("the web UI needs its extra: pip install 'echomimic[ui]'") from None
    from ..ui import launch

    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(f"warning: the web UI has no login and listens on {host}\n")
    launch(host=host, port=port, server=server)
