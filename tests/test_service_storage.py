"""Storage of the REST service: S3 (moto's in-process mock, no connection), signed result links
and retention.

``mock_aws`` answers every boto3 call inside this process; nothing connects anywhere.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from echomimic.service.app import create_app  # noqa: E402
from echomimic.service.retention import cleanup  # noqa: E402
from echomimic.service.settings import Settings  # noqa: E402
from echomimic.service.signing import ResultSigner, load_or_create_key  # noqa: E402
from echomimic.service.storage import LocalStorage, S3Storage, make_storage  # noqa: E402
from echomimic.service.store import JobRow, JobStore  # noqa: E402

BUCKET = "echomimic-test"
DAY = 86400.0


@pytest.fixture
def aws(monkeypatch):
    """moto's in-process S3 with fake credentials (boto3 never leaves the process)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with moto.mock_aws():
        import boto3

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield boto3.client("s3", region_name="us-east-1")


def _s3(tmp_path: Path, prefix: str = "tenant-a") -> S3Storage:
    return S3Storage(BUCKET, prefix=prefix, region="us-east-1", cache_dir=tmp_path / "cache")


def _finished(store: JobStore, storage, *, owner: str = "local", video: bytes = b"\x00mp4",
              finished_at: float | None = None) -> str:
    """A completed job with a stored input and result (as a worker would leave it)."""
    job_id = uuid.uuid4().hex
    inputs = {"image": storage.save_input(job_id, "image", b"png bytes")}
    store.create_job(owner, {"mode": "audio", "options": {}}, inputs, job_id=job_id)
    job = store.claim("w", 30.0, job_id=job_id)
    out = storage.result_path(job_id, job.attempts)
    out.write_bytes(video)
    assert store.complete(job_id, job.lease_token, storage.relative(out), {"n_frames": 1})
    if finished_at is not None:
        with Session(store.engine) as s, s.begin():
            s.execute(update(JobRow).where(JobRow.id == job_id).values(finished_at=finished_at))
    return job_id


def _keys(client, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
                  .get("Contents", ()))


# ------------------------------------------------------------------------------------------------
# S3 storage
# ------------------------------------------------------------------------------------------------


def test_s3_storage_round_trip(aws, tmp_path):
    storage = _s3(tmp_path)
    job_id = uuid.uuid4().hex
    rel = storage.save_input(job_id, "audio", b"RIFF....WAVE")
    assert rel == f"jobs/{job_id}/input.audio"
    assert _keys(aws) == [f"tenant-a/jobs/{job_id}/input.audio"]
    # a worker reads a local copy and writes its result locally; relative() uploads it
    local = storage.path(rel)
    assert local.read_bytes() == b"RIFF....WAVE" and storage.cache in local.parents
    out = storage.result_path(job_id, 2)
    out.write_bytes(b"video bytes")
    assert storage.relative(out) == f"jobs/{job_id}/result.2.mp4"
    assert not out.exists()                              # local copies removed after upload
    obj = aws.get_object(Bucket=BUCKET, Key=f"tenant-a/jobs/{job_id}/result.2.mp4")
    assert obj["Body"].read() == b"video bytes" and obj["ContentType"] == "video/mp4"
    assert storage.exists(f"jobs/{job_id}/result.2.mp4")
    assert not storage.exists(f"jobs/{job_id}/result.3.mp4")
    assert [j for j, _ in storage.iter_jobs()] == [job_id]
    with pytest.raises(FileNotFoundError):
        storage.path(f"jobs/{job_id}/input.image")
    # names never come from user text
    for bad in ("../etc/passwd", f"jobs/{job_id}/../../x", "jobs/abc/input.image"):
        with pytest.raises(ValueError):
            storage.path(bad)
    with pytest.raises(ValueError):
        storage.save_input("../x", "image", b"")
    # a presigned link names the object, expires, and carries a signature
    url = storage.presigned_url(f"jobs/{job_id}/result.2.mp4", 120, filename=f"{job_id}.mp4")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path.endswith(f"/tenant-a/jobs/{job_id}/result.2.mp4")
    assert query["X-Amz-Expires"] == ["120"] and query["X-Amz-Signature"][0]
    assert f"{job_id}.mp4" in query["response-content-disposition"][0]
    assert storage.writable()
    storage.delete_job(job_id)
    assert _keys(aws) == []
    assert not S3Storage("no-such-bucket", region="us-east-1", cache_dir=tmp_path / "c2").writable()


def test_make_storage_follows_the_settings(aws, tmp_path):
    local = make_storage(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalStorage) and not local.remote
    s3 = make_storage(Settings(data_dir=tmp_path, s3_bucket=BUCKET, s3_prefix="/p/q/",
                               s3_region="us-east-1"))
    assert isinstance(s3, S3Storage) and s3.remote and s3.prefix == "p/q/"
    env = {"ECHOMIMIC_S3_BUCKET": BUCKET, "ECHOMIMIC_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
           "ECHOMIMIC_RESULT_URL_TTL": "60", "ECHOMIMIC_RETENTION_DAYS": "7"}
    settings = Settings.from_env(env)
    assert (settings.s3_bucket, settings.s3_endpoint_url, settings.result_url_ttl,
            settings.retention_days) == (BUCKET, "http://127.0.0.1:9000", 60.0, 7)
    # the endpoint is used for the links (path style), without any request being made
    url = make_storage(settings.with_(data_dir=tmp_path)).presigned_url(
        f"jobs/{'a' * 32}/result.1.mp4", 60)
    assert url.startswith(f"http://127.0.0.1:9000/{BUCKET}/jobs/")


def test_service_end_to_end_on_s3(aws, tmp_path, astronaut_png, short_speech):
    """Upload -> S3 -> worker (local cache) -> result in S3 -> presigned link / redirect."""
    from echomimic.service.worker import run_job

    settings = Settings(data_dir=tmp_path / "data", auth=True, lease_seconds=10.0,
                        max_audio_seconds=5.0, s3_bucket=BUCKET, s3_region="us-east-1",
                        result_url_ttl=300)
    app = create_app(settings)
    store, storage = app.state.store, app.state.storage
    assert isinstance(storage, S3Storage)
    _, key = store.create_key("s3")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        client.headers["Authorization"] = f"Bearer {key}"
        r = client.post("/api/v1/generate",
                        files={"image": ("f.png", astronaut_png.read_bytes(), "image/png"),
                               "audio": ("s.wav", short_speech.path.read_bytes(), "audio/wav")},
                        data={"crop": "face", "size": "128", "fps": "12"})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        assert _keys(aws) == [f"jobs/{task_id}/input.audio", f"jobs/{task_id}/input.image"]
        assert not (tmp_path / "data" / "jobs" / task_id).exists()    # nothing kept locally
        assert run_job(task_id, store=store, storage=storage, settings=settings) == "completed"
        body = client.get(f"/api/v1/task/{task_id}").json()
        assert body["status"] == "completed", body
        result_key = f"jobs/{task_id}/result.1.mp4"
        assert result_key in _keys(aws)
        link = urlsplit(body["result_url"])
        assert link.path.endswith(f"/{BUCKET}/{result_key}") or link.path.endswith(f"/{result_key}")
        assert parse_qs(link.query)["X-Amz-Expires"] == ["300"]
        r = client.get(f"/api/v1/task/{task_id}/result", follow_redirects=False)
        assert r.status_code == 307 and result_key in r.headers["location"]
        assert client.get("/readyz").status_code == 200
    video = tmp_path / "out.mp4"
    video.write_bytes(aws.get_object(Bucket=BUCKET, Key=result_key)["Body"].read())
    from echomimic.media import probe_video

    info = probe_video(video)
    assert (info["width"], info["height"]) == (128, 128) and info["has_audio"]
    assert not list((tmp_path / "data" / "s3-cache" / "jobs").glob(f"{task_id}/*"))


# ------------------------------------------------------------------------------------------------
# signed links on local storage
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def local_app(tmp_path):
    settings = Settings(data_dir=tmp_path, auth=True, result_url_ttl=60)
    app = create_app(settings)
    _, key = app.state.store.create_key("links")
    owner = app.state.store.verify_key(key).id
    job_id = _finished(app.state.store, app.state.storage, owner=owner, video=b"fake mp4 bytes")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield app, client, key, job_id


def test_signed_result_link_works_without_the_key_until_it_expires(local_app):
    app, client, key, job_id = local_app
    body = client.get(f"/api/v1/task/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
    link = urlsplit(body["result_url"])
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert link.path == f"/api/v1/task/{job_id}/result" and set(query) == {"expires", "sig"}
    assert 0 < int(query["expires"]) - time.time() <= 61
    r = client.get(body["result_url"])                        # no Authorization header
    assert r.status_code == 200 and r.content == b"fake mp4 bytes"
    assert r.headers["content-type"] == "video/mp4"
    # without a key and without a signature: 401; with the key alone: still fine
    assert client.get(f"/api/v1/task/{job_id}/result").status_code == 401
    assert client.get(f"/api/v1/task/{job_id}/result",
                      headers={"Authorization": f"Bearer {key}"}).status_code == 200
    # altered links: 403 link_invalid
    for params in ({"expires": int(query["expires"]) + 3600, "sig": query["sig"]},
                   {"expires": query["expires"], "sig": "0" * 64},
                   {"expires": query["expires"], "sig": "ü"},
                   {"expires": "soon", "sig": query["sig"]},
                   {"sig": query["sig"]}):
        r = client.get(f"/api/v1/task/{job_id}/result", params=params)
        assert (r.status_code, r.json()["code"]) == (403, "link_invalid"), params
    # the signature of one task does not open another
    other = _finished(app.state.store, app.state.storage, owner="someone-else")
    r = client.get(f"/api/v1/task/{other}/result", params=query)
    assert (r.status_code, r.json()["code"]) == (403, "link_invalid")
    # a genuine link past its time: 410 link_expired
    signer = ResultSigner.from_settings(app.state.settings)
    old = signer.sign(job_id, now=time.time() - 120)
    r = client.get(f"/api/v1/task/{job_id}/result", params=old)
    assert (r.status_code, r.json()["code"]) == (410, "link_expired")


def test_signing_key_file_is_made_once_and_kept_private(tmp_path):
    first = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path) == first and len(first) == 64
    assert (tmp_path / "signing.key").stat().st_mode & 0o077 == 0
    a = ResultSigner(first).sign("f" * 32, now=1000.0)
    ResultSigner(first).verify("f" * 32, a["expires"], a["sig"], now=1000.0)
    other = ResultSigner.from_settings(Settings(data_dir=tmp_path, signing_key="x" * 40))
    assert other.signature("f" * 32, a["expires"]) != a["sig"]


# ------------------------------------------------------------------------------------------------
# retention
# ------------------------------------------------------------------------------------------------


def test_retention_deletes_old_finished_jobs_only(tmp_path):
    storage = LocalStorage(tmp_path)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    now = time.time()
    old = _finished(store, storage, finished_at=now - 10 * DAY)
    recent = _finished(store, storage, finished_at=now - 1 * DAY)
    queued = uuid.uuid4().hex                                  # old but not finished
    store.create_job("local", {}, {"image": storage.save_input(queued, "image", b"x")}, job_id=queued)
    with Session(store.engine) as s, s.begin():
        s.execute(update(JobRow).where(JobRow.id == queued).values(created_at=now - 30 * DAY))
    orphan = uuid.uuid4().hex                                  # files without a record
    storage.save_input(orphan, "image", b"x")
    for f in [storage.job_dir(orphan), *storage.job_dir(orphan).iterdir()]:
        os.utime(f, (now - 9 * DAY, now - 9 * DAY))
    fresh_orphan = uuid.uuid4().hex                            # a submission in flight
    storage.save_input(fresh_orphan, "image", b"x")

    dry = cleanup(store, storage, older_than_days=7, dry_run=True)
    assert (dry.jobs, dry.orphans) == ([old], [orphan])
    assert store.get(old) is not None and storage.job_dir(old).exists()

    report = cleanup(store, storage, older_than_days=7)
    assert (report.jobs, report.orphans, report.errors) == ([old], [orphan], [])
    assert store.get(old) is None and not storage.job_dir(old).exists()
    assert not storage.job_dir(orphan).exists()
    for kept in (recent, queued, fresh_orphan):
        assert storage.job_dir(kept).exists()
    assert store.get(recent) is not None and store.get(queued).status == "queued"
    assert cleanup(store, storage, older_than_days=7).jobs == []
    with pytest.raises(ValueError):
        cleanup(store, storage, older_than_days=0)


def test_retention_on_s3_and_from_the_app_lifespan(aws, tmp_path):
    settings = Settings(data_dir=tmp_path, auth=False, s3_bucket=BUCKET, s3_region="us-east-1",
                        retention_days=3, cleanup_interval=3600)
    app = create_app(settings)
    store, storage = app.state.store, app.state.storage
    old = _finished(store, storage, finished_at=time.time() - 4 * DAY)
    keep = _finished(store, storage)
    assert any(k.startswith(f"jobs/{old}/") for k in _keys(aws))
    with TestClient(app, base_url="http://127.0.0.1"):       # the lifespan starts the cleaner
        deadline = time.monotonic() + 20
        # the sweep's report is set when it has finished (the job's row goes before that)
        while app.state.cleaner.last is None:
            assert time.monotonic() < deadline, "the cleaner did not run"
            time.sleep(0.05)
        assert store.get(old) is None
    assert not _keys(aws, f"jobs/{old}/")
    assert _keys(aws, f"jobs/{keep}/") == [f"jobs/{keep}/input.image", f"jobs/{keep}/result.1.mp4"]


def test_cleanup_command(tmp_path):
    from typer.testing import CliRunner

    from echomimic.cli import app as cli

    storage = LocalStorage(tmp_path)
    store = JobStore(f"sqlite:///{(tmp_path / 'jobs.db').resolve()}")
    old = _finished(store, storage, finished_at=time.time() - 40 * DAY)
    runner = CliRunner()
    r = runner.invoke(cli, ["cleanup", "--data-dir", str(tmp_path), "--days", "30", "--dry-run"])
    assert r.exit_code == 0 and "would delete 1 finished jobs" in r.output
    assert store.get(old) is not None
    r = runner.invoke(cli, ["cleanup", "--data-dir", str(tmp_path), "--days", "30"])
    assert r.exit_code == 0 and "deleted 1 finished jobs" in r.output
    assert store.get(old) is None
    r = runner.invoke(cli, ["cleanup", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2
