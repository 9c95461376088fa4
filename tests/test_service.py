"""The REST service end to end, in two modes (every test that uses ``service`` runs in both):

* ``local``: the API (uvicorn in a thread of the test) with an embedded Celery worker thread and
  the default broker, an SQLite file in the data folder;
* ``distributed``: a private redis-server as the broker, ``echomimic serve --workers 0`` and a
  separate ``echomimic worker`` process (skipped when redis-server is not installed).

Nothing here connects anywhere but 127.0.0.1; refused URLs are checked without connecting.
"""

from __future__ import annotations

import contextlib
import io
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("celery")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from service_harness import (NO_REDIS, REDIS_SERVER, RedisServer, free_port,  # noqa: E402
                             service_env, start_api, start_worker, wait_for)

from echomimic.service.app import create_app  # noqa: E402
from echomimic.service.errors import InputTooLarge, UrlRefused  # noqa: E402
from echomimic.service.queue import EmbeddedWorker, JobQueue  # noqa: E402
from echomimic.service.settings import Settings  # noqa: E402
from echomimic.service.storage import LocalStorage  # noqa: E402
from echomimic.service.store import JobStore  # noqa: E402
from echomimic.service.urls import check_url, fetch  # noqa: E402
from echomimic.service.worker import run_claimed  # noqa: E402

MAX_AUDIO_SECONDS = 4.0
_free_port = free_port


class Service:
    """A running API and worker(s), two API keys, and a way to hold a job in the middle of its
    run. Subclasses start them in this process or as separate processes."""

    in_process = False

    def __init__(self, root: Path):
        self.root = root
        self.settings = Settings(data_dir=root, auth=True, lease_seconds=5.0,
                                 max_audio_seconds=MAX_AUDIO_SECONDS, url_allow=("localhost",))
        root.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.settings.database_url, max_attempts=self.settings.max_attempts)
        self.storage = LocalStorage(root)
        _, self.key_a = self.store.create_key("alice")
        _, self.key_b = self.store.create_key("bob")
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None) -> "httpx.Client":
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=60)

    def wait(self, client, task_id: str, until=("completed", "failed", "cancelled"),
             timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = client.get(f"/api/v1/task/{task_id}").json()
            if body["status"] in until:
                return body
            assert time.monotonic() < deadline, f"task still {body['status']}"
            time.sleep(0.05)


class LocalService(Service):
    """uvicorn in a thread, an embedded Celery worker thread, the SQLite broker."""

    in_process = True

    def __init__(self, root: Path):
        super().__init__(root)
        self.hook = None
        queue = JobQueue(self.settings, store=self.store, storage=self.storage,
                         progress_hook=lambda *a: self.hook(*a) if self.hook else None)
        self.app = create_app(self.settings, store=self.store, storage=self.storage, queue=queue)
        self.worker = EmbeddedWorker(queue, concurrency=1)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "the server to start")
        self.worker.start()

    def stop(self) -> None:
        self.hook = None
        self.worker.stop(timeout=30)
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @contextlib.contextmanager
    def held_mid_run(self, client, files, data):
        """Submit a job and hold it in its render stage until the block ends."""
        in_render, release = threading.Event(), threading.Event()

        def hook(job_id, stage, fraction):
            if stage == "render":
                in_render.set()
                release.wait(30)

        self.hook = hook
        try:
            task_id = client.post("/api/v1/generate", files=files, data=data).json()["task_id"]
            assert in_render.wait(60), "the job never started rendering"
            yield task_id
        finally:
            release.set()
            self.hook = None


class DistributedService(Service):
    """redis-server, `echomimic serve --workers 0` and `echomimic worker`: three processes."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.redis = RedisServer(root / "redis")
        self.env = service_env(root, ECHOMIMIC_BROKER_URL=self.redis.url,
                               ECHOMIMIC_LEASE_SECONDS="5",
                               ECHOMIMIC_MAX_AUDIO_SECONDS=str(MAX_AUDIO_SECONDS),
                               ECHOMIMIC_URL_ALLOW="localhost")
        self.api = self.worker = None

    def start(self) -> None:
        self.api, _ = start_api(self.env, self.root, port=self.port, workers=0)
        self.worker = start_worker(self.env, self.root, pool="solo")

    def stop(self) -> None:
        for proc in (self.worker, self.api):
            if proc is not None:
                proc.stop()
        self.redis.stop()

    def _database_writable(self) -> bool:
        con = sqlite3.connect(self.settings.database_url.removeprefix("sqlite:///"), timeout=0.5)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            con.close()

    @contextlib.contextmanager
    def held_mid_run(self, client, files, data):
        """Submit a job and stop the worker process (SIGSTOP) while the job runs; it goes on
        (SIGCONT) when the block ends."""
        def status_of(task_id):
            return client.get(f"/api/v1/task/{task_id}").json()["status"]

        held = None
        for _ in range(3):                       # a new job only when one finished too soon
            task_id = client.post("/api/v1/generate", files=files, data=data).json()["task_id"]
            wait_for(lambda: status_of(task_id) != "queued", 60, "the job to start",
                     interval=0.01)
            while status_of(task_id) == "running":
                self.worker.signal(signal.SIGSTOP)
                # a process stopped in the middle of a database write would keep SQLite's
                # write lock; only a worker stopped between writes stands for a hung render
                if self._database_writable() and status_of(task_id) == "running":
                    held = task_id
                    break
                self.worker.signal(signal.SIGCONT)
                time.sleep(0.02)
            if held is not None:
                break
        else:
            pytest.fail("the job always finished before the worker could be stopped")
        try:
            yield task_id
        finally:
            self.worker.signal(signal.SIGCONT)


@pytest.fixture(scope="module", params=["local", "distributed"])
def service(request, tmp_path_factory):
    if request.param == "distributed" and REDIS_SERVER is None:
        pytest.skip(NO_REDIS)
    cls = LocalService if request.param == "local" else DistributedService
    svc = cls(tmp_path_factory.mktemp(f"service-{request.param}"))
    try:
        svc.start()
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def alice(service):
    with service.client(service.key_a) as c:
        yield c


@pytest.fixture(scope="module")
def bob(service):
    with service.client(service.key_b) as c:
        yield c


def _files(image: bytes, audio: bytes) -> dict:
    return {"image": ("face.png", image, "image/png"), "audio": ("speech.wav", audio, "audio/wav")}


FAST = {"crop": "face", "size": "256"}


@pytest.fixture(scope="module")
def done_job(service, alice, astronaut_png, short_speech):
    """A job submitted with an Idempotency-Key and run to completion: (first response, status)."""
    files = _files(astronaut_png.read_bytes(), short_speech.path.read_bytes())
    r = alice.post("/api/v1/generate", files=files, data=FAST, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 202, r.text
    body = r.json()
    return body, service.wait(alice, body["task_id"])


def test_submit_poll_download(service, alice, done_job, short_speech, tmp_path):
    from echomimic.media import iter_video_frames, probe_video

    first, status = done_job
    assert first["status"] == "queued" and first["progress"] == 0.0
    assert status["status"] == "completed", status
    assert status["progress"] == 1.0 and status["error"] is None
    assert status["created_at"].endswith("Z") and status["attempts"] == 1
    r = alice.get(status["result_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    video = tmp_path / "out.mp4"
    video.write_bytes(r.content)
    info = probe_video(video)
    assert (info["width"], info["height"]) == (256, 256)
    assert info["has_audio"]
    assert abs(info["duration"] - short_speech.duration) < 0.2
    frames = sum(1 for _ in iter_video_frames(video))
    assert frames == status["result"]["n_frames"] == round(short_speech.duration * 25)
    part = alice.get(status["result_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == r.content[100:200]
    metrics = alice.get("/metrics").text
    assert 'echomimic_jobs{status="completed"}' in metrics
    assert "echomimic_jobs_submitted_total" in metrics
    assert float(_metric(metrics, "echomimic_render_seconds_count")) >= 1
    assert float(_metric(metrics, "echomimic_realtime_factor_count")) >= 1
    assert float(_metric(metrics, "echomimic_queue_depth")) >= 0       # measured, not unknown


def _metric(text: str, name: str) -> str:
    """The value of an unlabelled sample in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return line.split()[1]
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture(scope="module")
def talking_video(tmp_path_factory, astronaut_png, short_speech):
    """A short mp4 of the astronaut speaking (made by the pipeline), to drive other jobs."""
    from echomimic import animate

    path = tmp_path_factory.mktemp("driving") / "talking.mp4"
    animate(astronaut_png, path, audio=short_speech.path, crop="face", size=256)
    return path


@pytest.mark.parametrize("mode", ["video", "mixed"])
def test_video_and_mixed_modes(service, alice, astronaut_png, short_speech, talking_video,
                               tmp_path, mode):
    from echomimic.media import probe_video

    files = {"image": ("face.png", astronaut_png.read_bytes(), "image/png"),
             "video": ("driver.mp4", talking_video.read_bytes(), "video/mp4")}
    data = dict(FAST)
    if mode == "mixed":       # lips from the speech, head, eyes and brows from the video
        files["audio"] = ("speech.wav", short_speech.path.read_bytes(), "audio/wav")
        data["drive"] = "head,eyes,brows"
    r = alice.post("/api/v1/generate", files=files, data=data)
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    body = service.wait(alice, task_id)
    assert body["status"] == "completed", body
    out = tmp_path / f"{mode}.mp4"
    out.write_bytes(alice.get(f"/api/v1/task/{task_id}/result").content)
    info, driver = probe_video(out), probe_video(talking_video)
    assert (info["width"], info["height"]) == (256, 256)
    assert abs(info["duration"] - driver["duration"]) <= 0.12, (info, driver)
    assert info["has_audio"]


def test_idempotency_returns_the_same_task(service, alice, bob, done_job, astronaut_png,
                                           short_speech):
    first, _ = done_job
    files = _files(astronaut_png.read_bytes(), short_speech.path.read_bytes())
    again = alice.post("/api/v1/generate", files=files, data=FAST, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 202
    assert again.json()["task_id"] == first["task_id"]
    assert again.json()["status"] == "completed"
    # the same key from another tenant names another task
    other = bob.post("/api/v1/generate", files=files, data=FAST, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 202 and other.json()["task_id"] != first["task_id"]
    assert service.wait(bob, other.json()["task_id"])["status"] == "completed"


def test_tenant_isolation_and_auth(service, alice, bob, done_job):
    task_id = done_job[0]["task_id"]
    assert alice.get(f"/api/v1/task/{task_id}").status_code == 200
    for method, url in (("GET", f"/api/v1/task/{task_id}"), ("GET", f"/api/v1/task/{task_id}/result"),
                        ("DELETE", f"/api/v1/task/{task_id}")):
        r = bob.request(method, url)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    with service.client(None) as anon:
        r = anon.get(f"/api/v1/task/{task_id}")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    with service.client("em_not-a-key") as wrong:
        assert wrong.get(f"/api/v1/task/{task_id}").status_code == 401
    assert alice.get("/healthz").json() == {"status": "ok"}
    assert alice.get("/readyz").status_code == 200
    assert "/api/v1/generate" in alice.get("/openapi.json").json()["paths"]


def test_cancel_a_running_job(service, alice, astronaut_png, short_speech):
    files = _files(astronaut_png.read_bytes(), short_speech.path.read_bytes())
    with service.held_mid_run(alice, files, FAST) as task_id:
        assert alice.get(f"/api/v1/task/{task_id}").json()["status"] == "running"
        r = alice.delete(f"/api/v1/task/{task_id}")
        assert r.status_code == 200 and r.json()["status"] == "running"
    status = service.wait(alice, task_id)
    assert status["status"] == "cancelled"
    assert status["error"]["code"] == "cancelled" and status["progress"] < 1.0
    r = alice.get(f"/api/v1/task/{task_id}/result")
    assert r.status_code == 409 and r.json()["code"] == "not_ready"
    job_dir = service.storage.job_dir(task_id)
    assert not list(job_dir.glob("result*.mp4"))          # no partial video left
    assert (job_dir / "input.image").exists()             # the inputs are kept


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_inputs_are_refused_before_queueing(service, alice, astronaut_png, short_speech,
                                                make_silence, monkeypatch):
    audio = short_speech.path.read_bytes()
    before = service.store.count_by_status()

    def post(**kw):
        return alice.post("/api/v1/generate", **kw)

    r = post(files=_files(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, audio), data=FAST)
    assert (r.status_code, r.json()["code"]) == (422, "image_unreadable")
    gray = np.full((256, 256, 3), 128, np.uint8)
    r = post(files=_files(_png(gray), audio), data=FAST)
    assert (r.status_code, r.json()["code"]) == (422, "no_face")
    long_audio = make_silence(MAX_AUDIO_SECONDS + 2).read_bytes()
    r = post(files=_files(astronaut_png.read_bytes(), long_audio), data=FAST)
    assert (r.status_code, r.json()["code"]) == (413, "audio_too_long")
    huge = np.zeros((4200, 4200, 3), np.uint8)           # 17.6 MP, over the 16.8 MP default
    r = post(files=_files(_png(huge), audio), data=FAST)
    assert (r.status_code, r.json()["code"]) == (413, "image_too_large")
    r = post(files=_files(astronaut_png.read_bytes(), audio), data={"crop": "sideways"})
    assert (r.status_code, r.json()["code"]) == (422, "invalid_option")
    r = post(files=_files(astronaut_png.read_bytes(), audio), data={"resolution": "8k"})   # 4k is valid
    assert (r.status_code, r.json()["code"]) == (422, "invalid_option")

    # URLs to non-public addresses: refused without any connection being opened (in the local
    # mode the API runs in this process, so its connections are watched too)
    connects: list = []
    real = socket.create_connection

    def watch(address, *a, **kw):
        if address[0] != "127.0.0.1" or address[1] != service.port:
            connects.append(address)
            raise OSError("tests open no connection")
        return real(address, *a, **kw)

    monkeypatch.setattr(socket, "create_connection", watch)
    for host in ("127.0.0.1:1", "10.0.0.1", "169.254.169.254", "[::1]"):
        r = post(json={"image_url": f"http://{host}/face.png", "text": "Hello there."})
        assert (r.status_code, r.json()["code"]) == (422, "url_forbidden"), r.text
    assert connects == []
    assert service.store.count_by_status() == before


def test_url_guard_and_fetch(service):
    for url in ("http://127.0.0.1/a", "http://10.0.0.1/a", "http://192.168.1.2/", "ftp://8.8.8.8/",
                "http://169.254.169.254/latest", "http://[::ffff:10.0.0.1]/", "http://100.64.0.1/"):
        with pytest.raises(UrlRefused):
            check_url(url)
    assert check_url("https://8.8.8.8/x") == ("https", "8.8.8.8", 443)
    url = f"{service.base}/healthz"
    with pytest.raises(UrlRefused):
        fetch(url, max_bytes=1000)
    assert fetch(url, max_bytes=1000, allow=["127.0.0.1/32"]) == b'{"status":"ok"}'
    with pytest.raises(InputTooLarge):
        fetch(url, max_bytes=5, allow=["127.0.0.1"])


def test_redirects_are_checked_again(monkeypatch):
    """A public-looking (allowed) first hop that redirects to a private address is refused."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", "http://10.0.0.1/metadata")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connects: list = []
    real = socket.create_connection

    def watch(address, *a, **kw):
        connects.append(address[0])
        if address[0] != "127.0.0.1":
            raise OSError("tests open no connection")
        return real(address, *a, **kw)

    monkeypatch.setattr(socket, "create_connection", watch)
    try:
        with pytest.raises(UrlRefused, match="10.0.0.1"):
            fetch(f"http://127.0.0.1:{port}/face.png", max_bytes=1000, allow=["127.0.0.1"])
    finally:
        server.shutdown()
        server.server_close()
    assert connects == ["127.0.0.1"]


def test_json_submission_with_urls_and_text(service, alice, astronaut_png, tmp_path):
    """JSON with image_url (an allow-listed host name) and text to speak runs to the end."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "face.png").write_bytes(astronaut_png.read_bytes())

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://localhost:{server.server_address[1]}/face.png"
        r = alice.post("/api/v1/generate", json={"image_url": url, "text": "Hello there.",
                                                 "lang": "en", "resolution": "512", "size": 128})
        assert r.status_code == 202, r.text
        missing = alice.post("/api/v1/generate", json={"image_url": url.replace("face", "none"),
                                                       "text": "Hello."})
        assert (missing.status_code, missing.json()["code"]) == (422, "url_fetch_failed")
    finally:
        server.shutdown()
        server.server_close()
    status = service.wait(alice, r.json()["task_id"])
    assert status["status"] == "completed", status
    assert (status["result"]["width"], status["result"]["height"]) == (128, 128)  # crop face
    job = service.store.get(r.json()["task_id"])
    assert job.params["mode"] == "text" and job.params["options"]["crop"] == "face"


def test_keys_create_prints_the_key_last(tmp_path, capsys):
    from echomimic.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["keys", "create", "--name", "ci", "--data-dir", str(tmp_path)])
    assert exit_.value.code in (0, None)
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    store = JobStore(Settings(data_dir=tmp_path).database_url)
    key = store.verify_key(secret)
    assert key is not None and key.name == "ci"
    with pytest.raises(SystemExit):
        main(["keys", "revoke", key.id, "--data-dir", str(tmp_path)])
    assert store.verify_key(secret) is None


def test_cancelling_a_queued_job_is_immediate(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    job, _ = store.create_job("alice", {}, {})
    assert store.cancel(job.id, owner="bob") is None
    cancelled = store.cancel(job.id, owner="alice")
    assert cancelled.status == "cancelled" and cancelled.error_code == "cancelled"
    assert store.claim("w", 5) is None


def _queued_job(store: JobStore, storage: LocalStorage, image: bytes, audio: bytes) -> str:
    import uuid

    job_id = uuid.uuid4().hex
    inputs = {"image": storage.save_input(job_id, "image", image),
              "audio": storage.save_input(job_id, "audio", audio)}
    store.create_job("local", {"mode": "audio", "options": {"crop": "face", "size": 128}},
                     inputs, job_id=job_id)
    return job_id


def test_a_dead_worker_job_is_requeued_and_completes_once(tmp_path, astronaut_png, short_speech):
    settings = Settings(data_dir=tmp_path, auth=False, lease_seconds=5.0)
    store = JobStore(settings.database_url, max_attempts=3)
    storage = LocalStorage(tmp_path)
    job_id = _queued_job(store, storage, astronaut_png.read_bytes(), short_speech.path.read_bytes())

    dead = store.claim("dead-worker", lease_seconds=0.2)         # it never heartbeats
    assert dead is not None and dead.id == job_id and dead.status == "running"
    assert store.claim("other", lease_seconds=5) is None           # nobody else gets it meanwhile
    time.sleep(0.4)
    assert store.reap() == [job_id]
    assert store.get(job_id).status == "queued"

    alive = store.claim("alive", lease_seconds=5)
    assert alive.id == job_id and alive.attempts == 2
    # the presumed-dead worker wakes up while the job runs again: all its writes are refused
    assert not store.heartbeat(job_id, dead.lease_token, 5, progress=0.9)
    assert not store.complete(job_id, dead.lease_token, "jobs/x/result.1.mp4", {})
    assert store.get(job_id).status == "running" and store.get(job_id).progress == 0.0
    assert run_claimed(alive, store=store, storage=storage, settings=settings) == "completed"
    job = store.get(job_id)
    assert job.status == "completed" and job.attempts == 2 and job.result.endswith("result.2.mp4")
    assert storage.path(job.result).stat().st_size > 1000
    assert not store.complete(job_id, dead.lease_token, "jobs/x/result.1.mp4", {})
    assert not store.fail(job_id, dead.lease_token, "boom", "late")
    assert not store.heartbeat(job_id, dead.lease_token, 5)
    assert store.get(job_id).status == "completed" and store.get(job_id).result == job.result
    assert store.reap() == [] and store.claim("again", 5) is None


def test_a_job_whose_workers_keep_dying_fails_with_worker_lost(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", max_attempts=2)
    job, created = store.create_job("local", {}, {})
    assert created
    for _ in range(2):
        assert store.claim("dying", lease_seconds=0.01) is not None
        time.sleep(0.05)
        store.reap()
    job = store.get(job.id)
    assert job.status == "failed" and job.error_code == "worker_lost"


def test_api_keys_are_hashed_and_revocable(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'keys.db'}")
    key, secret = store.create_key("ci")
    assert secret.startswith("em_") and store.verify_key(secret).id == key.id
    with store.engine.connect() as conn:
        assert secret not in str(conn.exec_driver_sql("SELECT * FROM api_keys").all())
    assert store.revoke_key(key.id[:8])
    assert store.verify_key(secret) is None
    assert [k.revoked_at is not None for k in store.list_keys()] == [True]


def test_settings_from_environment(tmp_path):
    from echomimic.errors import InvalidOption

    s = Settings.from_env({"ECHOMIMIC_DATA_DIR": str(tmp_path), "ECHOMIMIC_AUTH": "off",
                           "ECHOMIMIC_URL_ALLOW": "media.local, 10.1.0.0/16",
                           "ECHOMIMIC_MAX_AUDIO_SECONDS": "90"})
    assert s.data_dir == tmp_path and s.auth is False and s.max_audio_seconds == 90.0
    assert s.url_allow == ("media.local", "10.1.0.0/16")
    assert s.database_url == f"sqlite:///{(tmp_path / 'jobs.db').resolve()}"
    assert Settings.from_env({"ECHOMIMIC_DB_URL": "sqlite:///x.db"}).database_url == "sqlite:///x.db"
    assert s.stream_processes is False
    assert Settings.from_env({"ECHOMIMIC_STREAM_PROCESSES": "on"}).stream_processes is True
    with pytest.raises(InvalidOption):
        Settings.from_env({"ECHOMIMIC_AUTH": "maybe"})
    with pytest.raises(InvalidOption):
        Settings.from_env({"ECHOMIMIC_LEASE_SECONDS": "-1"})


def test_a_locked_database_answers_503_not_500(tmp_path, monkeypatch):
    """A database another process keeps locked past the busy timeout gives a retryable 503."""
    from fastapi.testclient import TestClient
    from sqlalchemy.exc import OperationalError

    app = create_app(Settings(data_dir=tmp_path, auth=False))

    def locked(*_a, **_kw):
        raise OperationalError("UPDATE jobs ...", {}, Exception("database is locked"))

    monkeypatch.setattr(app.state.store, "get", locked)
    with TestClient(app) as client:
        r = client.get("/api/v1/task/" + "0" * 32)
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "database_busy" and r.headers["retry-after"] == "2"
