"""The queue side of the service, in this process: per-key limits, the analysis cache shared by
submissions and workers (disk and Redis), and recovery of lost messages by the maintenance loop.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("celery")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from service_harness import NO_REDIS, REDIS_SERVER, RedisServer, wait_for  # noqa: E402

from echomimic.errors import InvalidOption  # noqa: E402
from echomimic.service.app import create_app  # noqa: E402
from echomimic.service.queue import EmbeddedWorker, JobQueue, Maintenance  # noqa: E402
from echomimic.service.settings import Settings  # noqa: E402
from echomimic.service.storage import LocalStorage  # noqa: E402
from echomimic.service.store import JobStore  # noqa: E402

FAST = {"crop": "face", "size": "64"}


def _files(astronaut_png: Path, speech: Path) -> dict:
    return {"image": ("face.png", astronaut_png.read_bytes(), "image/png"),
            "audio": ("speech.wav", speech.read_bytes(), "audio/wav")}


def test_rate_and_concurrency_limits_per_key(tmp_path, astronaut_png, short_speech):
    """No worker runs: jobs stay queued, so the concurrency limit is reached."""
    settings = Settings(data_dir=tmp_path, rate_limit=3, max_active_jobs=2)
    app = create_app(settings)
    store: JobStore = app.state.store
    _, alice_key = store.create_key("alice")
    _, bob_key = store.create_key("bob")
    files = _files(astronaut_png, short_speech.path)
    with TestClient(app) as http:
        alice = {"Authorization": f"Bearer {alice_key}"}

        def post(headers=alice, **extra):
            return http.post("/api/v1/generate", files=files, data=FAST,
                             headers={**headers, **extra})

        first = post(**{"Idempotency-Key": "one"})
        assert first.status_code == 202
        assert post().status_code == 202
        full = post()
        assert (full.status_code, full.json()["code"]) == (429, "too_many_jobs")
        assert store.count_active(store.verify_key(alice_key).id) == 2
        # cancelling one frees a place; the refused submission did not count for the rate
        assert http.delete(f"/api/v1/task/{first.json()['task_id']}",
                           headers=alice).json()["status"] == "cancelled"
        assert post().status_code == 202
        limited = post()
        assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        # a retried submission is answered from its idempotency key, whatever the limits
        again = post(**{"Idempotency-Key": "one"})
        assert again.status_code == 202 and again.json()["task_id"] == first.json()["task_id"]
        # another key has its own limits
        assert post({"Authorization": f"Bearer {bob_key}"}).status_code == 202
    assert store.count_by_status() == {"queued": 3, "cancelled": 1}


def test_limits_from_the_environment(tmp_path):
    s = Settings.from_env({"ECHOMIMIC_RATE_LIMIT": "0", "ECHOMIMIC_MAX_ACTIVE_JOBS": "7",
                           "ECHOMIMIC_BROKER_URL": "redis://127.0.0.1:6379/0",
                           "ECHOMIMIC_QUEUE": "jobs", "ECHOMIMIC_REQUEUE_SECONDS": "5"})
    assert (s.rate_limit, s.max_active_jobs, s.queue_name, s.requeue_seconds) == (0, 7, "jobs", 5.0)
    assert s.celery_broker_url == "redis://127.0.0.1:6379/0" and not s.embedded_broker
    local = Settings(data_dir=tmp_path)
    assert local.embedded_broker and local.celery_broker_url.startswith("sqla+sqlite:///")
    with pytest.raises(InvalidOption):
        Settings.from_env({"ECHOMIMIC_RATE_LIMIT": "-1"})
    with pytest.raises(InvalidOption):
        Settings.from_env({"ECHOMIMIC_MAX_ACTIVE_JOBS": "many"})


@pytest.fixture
def count_analyses(monkeypatch):
    """Counts the portrait analyses actually computed (cache misses)."""
    from echomimic.analysis import face

    calls: list[str] = []
    real = face.analyze_face

    def counted(*args, **kwargs):
        calls.append(kwargs.get("content_hash", ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(face, "analyze_face", counted)
    return calls


def test_a_second_job_on_the_same_photo_skips_analysis(tmp_path, monkeypatch, count_analyses,
                                                       astronaut_png, short_speech):
    """The submission check analyses the photo once; the worker and a second job reuse it."""
    from echomimic.analysis import cache

    monkeypatch.setenv("ECHOMIMIC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ECHOMIMIC_CACHE_URL", raising=False)
    settings = Settings(data_dir=tmp_path / "data", auth=False)
    app = create_app(settings)
    worker = EmbeddedWorker(app.state.queue, concurrency=1).start()
    before = cache.stats()
    try:
        with TestClient(app) as http:
            for n in (1, 2):
                r = http.post("/api/v1/generate", files=_files(astronaut_png, short_speech.path),
                              data=FAST)
                assert r.status_code == 202
                task_id = r.json()["task_id"]
                wait_for(lambda: http.get(f"/api/v1/task/{task_id}").json()["status"]
                         in ("completed", "failed"), 60, f"job {n}")
                assert http.get(f"/api/v1/task/{task_id}").json()["status"] == "completed"
    finally:
        worker.stop()
    assert len(count_analyses) == 1                    # job 1's submission check only
    after = cache.stats()
    assert after["hits"] - before["hits"] == 3         # job 1's run, job 2's check and run
    assert list((tmp_path / "cache" / "analysis").glob("*.npz"))


@pytest.mark.skipif(REDIS_SERVER is None, reason=NO_REDIS)
def test_the_analysis_cache_in_redis(tmp_path, monkeypatch, count_analyses, astronaut_rgb):
    from echomimic.analysis import cache
    from echomimic.media import load_image

    redis = RedisServer(tmp_path / "redis")
    try:
        monkeypatch.setenv("ECHOMIMIC_CACHE_URL", f"{redis.url}/0")
        monkeypatch.setenv("ECHOMIMIC_CACHE_DIR", str(tmp_path / "disk"))
        rgb, digest = load_image(_png_bytes(astronaut_rgb))
        first = cache.analyze_cached(rgb, content_hash=digest)
        second = cache.analyze_cached(rgb, content_hash=digest)
        assert len(count_analyses) == 1 and second.meta.get("cached")
        assert (second.landmarks == first.landmarks).all()
        assert redis.client.ttl(cache.redis_key(digest, 0)) > 0
        assert not (tmp_path / "disk").exists()        # nothing went to disk
    finally:
        redis.stop()
    # Redis gone: the analysis still runs (a miss), nothing is raised
    third = cache.analyze_cached(rgb, content_hash=digest)
    assert len(count_analyses) == 2 and third.width == rgb.shape[1]


def _png_bytes(rgb) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_lost_and_orphaned_jobs_are_published_again(tmp_path, astronaut_png, short_speech):
    """A queued job without a message, and a running job whose worker died, are published
    again by the maintenance loop; duplicates are harmless: each job runs once to the end."""
    # requeue_seconds leaves room for a slow first connection to the broker between a publish
    # and the next round (0.3 s was too tight on a machine with cold caches)
    settings = Settings(data_dir=tmp_path, auth=False, lease_seconds=5.0, requeue_seconds=1.5)
    store = JobStore(settings.database_url)
    storage = LocalStorage(tmp_path)
    queue = JobQueue(settings, store=store, storage=storage)
    upkeep = Maintenance(store, queue, settings)

    def queued_job() -> str:
        job_id = uuid.uuid4().hex
        inputs = {"image": storage.save_input(job_id, "image", astronaut_png.read_bytes()),
                  "audio": storage.save_input(job_id, "audio", short_speech.path.read_bytes())}
        store.create_job("local", {"mode": "audio", "options": {"crop": "face", "size": 64}},
                         inputs, job_id=job_id)
        return job_id

    lost = queued_job()                                 # never published
    assert queue.depth() == 0
    assert upkeep.tick()["republished"] == []           # too recent to be presumed lost
    wait_for(lambda: store.stale_queued(settings.requeue_seconds), 5, "the job to be stale")
    assert upkeep.tick()["republished"] == [lost] and queue.depth() == 1
    assert upkeep.tick()["republished"] == []           # published just now

    orphan = queued_job()
    assert store.claim("dead-worker", 0.05, job_id=orphan) is not None
    wait_for(lambda: upkeep.tick()["reaped"] == [orphan], 5, "the orphan to be reaped")
    assert queue.depth() == 2 and store.get(orphan).status == "queued"
    assert queue.publish(lost)                          # a duplicate message
    assert upkeep.republish_queued() == sorted([lost, orphan], key=lambda j: store.get(j).created_at)
    assert queue.depth() == 5

    worker = EmbeddedWorker(queue, concurrency=2).start()
    try:
        wait_for(lambda: queue.depth() == 0 and all(
            store.get(j).status == "completed" for j in (lost, orphan)), 60, "the jobs to run")
    finally:
        worker.stop()
    assert store.get(lost).attempts == 1 and store.get(orphan).attempts == 2
    assert sorted(p.name for p in storage.job_dir(orphan).glob("result*.mp4")) == ["result.2.mp4"]


def test_the_rate_window_slides(tmp_path):
    from echomimic.service.limits import RateLimited, SubmissionLimits

    now = [1000.0]
    limits = SubmissionLimits(JobStore(f"sqlite:///{tmp_path / 'jobs.db'}"), per_minute=2,
                              max_active=0, clock=lambda: now[0])
    limits.check("k")
    now[0] += 20
    limits.check("k")
    with pytest.raises(RateLimited) as refused:
        limits.check("k")
    assert refused.value.retry_after == 40 and refused.value.http_status == 429
    now[0] += 40.5                                     # the first submission left the window
    limits.check("k")
    with pytest.raises(RateLimited):
        limits.check("k")


def test_a_database_of_an_earlier_version_gets_the_new_column(tmp_path):
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    JobStore(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE jobs DROP COLUMN enqueued_at"))
    engine.dispose()
    store = JobStore(url)
    job, _ = store.create_job("local", {}, {})
    assert store.stale_queued(0.0) == [job.id]
