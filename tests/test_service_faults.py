"""Distributed service under load and faults: real processes, real kills, a real Redis.

``echomimic serve --workers 0`` (API only) and ``echomimic worker`` processes share a private
redis-server (the broker) on 127.0.0.1 and one data folder. Skipped without redis-server.
"""

from __future__ import annotations

import io
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("celery")
httpx = pytest.importorskip("httpx")

from service_harness import (NO_REDIS, REDIS_SERVER, RedisServer, service_env,  # noqa: E402
                             start_api, start_worker, wait_for)

from echomimic.service.settings import Settings  # noqa: E402
from echomimic.service.store import JobStore  # noqa: E402

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason=NO_REDIS)

LEASE = 3.0
QUEUE = "echomimic"
TINY = {"crop": "face", "size": "64"}
N_LOAD = 50


class Cluster:
    """Redis, one API process, and as many worker processes as a test starts."""

    def __init__(self, root: Path):
        self.root = root
        self.redis = RedisServer(root / "redis")
        # a long re-publish delay: after the restart below, only the API's start-up
        # re-publishing can bring the lost messages back
        self.env = service_env(root, ECHOMIMIC_BROKER_URL=self.redis.url,
                               ECHOMIMIC_LEASE_SECONDS=str(LEASE),
                               ECHOMIMIC_REQUEUE_SECONDS="600",
                               ECHOMIMIC_MAX_AUDIO_SECONDS="4")
        self.store = JobStore(Settings(data_dir=root).database_url)
        self.keys = [self.store.create_key(f"client-{i}")[1] for i in range(5)]
        self.api, self.base = start_api(self.env, root, workers=0)
        self.workers: list = []

    def worker(self, name: str = "worker", **env: str):
        proc = start_worker({**self.env, **env}, self.root, pool="solo", name=name)
        self.workers.append(proc)
        return proc

    def client(self, key: str) -> "httpx.Client":
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {key}"},
                            timeout=60)

    def stop(self) -> None:
        for proc in self.workers:
            proc.stop()
        self.api.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def tiny_inputs(astronaut_rgb, tmp_path_factory):
    """A small photo (160 x 160) and one second of speech."""
    from PIL import Image

    from echomimic.speech import synthesize, write_wav
    from echomimic.types import Audio

    buf = io.BytesIO()
    Image.fromarray(np.asarray(astronaut_rgb)).resize((160, 160)).save(buf, format="PNG")
    audio, _ = synthesize("Hello there, friend.", lang="en")
    one_second = np.asarray(audio.samples, np.float32)[: audio.sample_rate]
    wav = write_wav(tmp_path_factory.mktemp("tiny") / "one.wav",
                    Audio(samples=one_second, sample_rate=audio.sample_rate))
    return {"image": ("face.png", buf.getvalue(), "image/png"),
            "audio": ("speech.wav", wav.read_bytes(), "audio/wav")}


def _completed_lines(cluster) -> list[str]:
    """Job ids of the "job <id>: completed" lines of every worker log."""
    ids: list[str] = []
    for proc in cluster.workers:
        ids += re.findall(r"job ([0-9a-f]{32}): completed", proc.tail(10**8))
    return ids


def test_load_50_submissions_from_several_clients(cluster, tiny_inputs):
    """50 jobs submitted at once by 5 clients, run by 2 worker processes: all complete, each
    exactly once, with one result each."""
    # a lease long enough that a busy machine never loses one: attempts must stay at 1
    w1, w2 = (cluster.worker(name, ECHOMIMIC_LEASE_SECONDS="60") for name in ("load-a", "load-b"))

    def submit(i: int) -> str:
        with cluster.client(cluster.keys[i % len(cluster.keys)]) as c:
            r = c.post("/api/v1/generate", files=tiny_inputs, data=TINY,
                       headers={"Idempotency-Key": f"load-{i}"})
            assert r.status_code == 202, r.text
            return r.json()["task_id"]

    with ThreadPoolExecutor(10) as pool:
        task_ids = list(pool.map(submit, range(N_LOAD)))
    assert len(set(task_ids)) == N_LOAD

    def all_finished() -> bool:
        return all(cluster.store.get(t).status in ("completed", "failed") for t in task_ids)

    wait_for(all_finished, 300, "the 50 jobs to finish", interval=0.5)
    for task_id in task_ids:
        job = cluster.store.get(task_id)
        assert job.status == "completed" and job.attempts == 1, (job.status, job.error_message)
        assert job.result == f"jobs/{task_id}/result.1.mp4"
        files = sorted(p.name for p in (cluster.root / "jobs" / task_id).glob("result*.mp4"))
        assert files == ["result.1.mp4"]
    done = _completed_lines(cluster)
    assert sorted(done) == sorted(task_ids)            # each ran to completion exactly once
    w1.stop()
    w2.stop()


def _hold_running(cluster, client, worker, files) -> str:
    """Submit a job and freeze ``worker`` (SIGSTOP) while the job runs on it."""
    for _ in range(5):
        task_id = client.post("/api/v1/generate", files=files, data=TINY).json()["task_id"]

        def started():
            status = cluster.store.get(task_id).status
            return status if status != "queued" else None

        if wait_for(started, 60, "the job to start", interval=0.005) == "running":
            worker.signal(signal.SIGSTOP)
            if cluster.store.get(task_id).status == "running":
                return task_id
            worker.signal(signal.SIGCONT)
    pytest.fail("the job always finished before its worker could be stopped")


def test_a_job_whose_worker_is_killed_completes_once_a_worker_returns(cluster, tiny_inputs):
    doomed = cluster.worker("doomed")
    with cluster.client(cluster.keys[0]) as client:
        task_id = _hold_running(cluster, client, doomed, tiny_inputs)
        doomed.kill()                                  # SIGKILL in the middle of the job
        job = cluster.store.get(task_id)
        assert job.status == "running" and job.attempts == 1
        time.sleep(LEASE / 2)
        assert cluster.store.get(task_id).status == "running"   # nobody else runs it meanwhile
        cluster.worker("rescuer")
        wait_for(lambda: cluster.store.get(task_id).status == "completed", 60,
                 "the job to complete on the new worker", interval=0.1)
        job = cluster.store.get(task_id)
        assert job.attempts == 2 and job.result == f"jobs/{task_id}/result.2.mp4"
        assert not (cluster.root / "jobs" / task_id / "result.1.mp4").exists()
        r = client.get(f"/api/v1/task/{task_id}/result")
        assert r.status_code == 200 and r.content[4:8] == b"ftyp"
    assert _completed_lines(cluster).count(task_id) == 1
    for proc in cluster.workers:
        proc.stop()


def test_queued_jobs_survive_an_api_restart_that_lost_their_messages(cluster, tiny_inputs):
    for proc in cluster.workers:
        assert not proc.alive()                        # nothing runs the jobs for now
    with cluster.client(cluster.keys[1]) as client:
        ids = [client.post("/api/v1/generate", files=tiny_inputs, data=TINY).json()["task_id"]
               for _ in range(3)]
    assert cluster.redis.client.llen(QUEUE) >= 3
    cluster.api.kill()
    cluster.redis.client.delete(QUEUE)                 # the broker lost the messages
    assert all(cluster.store.get(t).status == "queued" for t in ids)

    port = int(cluster.base.rsplit(":", 1)[1])
    cluster.api, _ = start_api(cluster.env, cluster.root, port=port, workers=0)
    wait_for(lambda: cluster.redis.client.llen(QUEUE) >= 3, 30, "the jobs to be published again")
    cluster.worker("after-restart")
    wait_for(lambda: all(cluster.store.get(t).status == "completed" for t in ids), 120,
             "the queued jobs to complete after the restart", interval=0.2)
    assert all(cluster.store.get(t).attempts == 1 for t in ids)
    done = _completed_lines(cluster)
    assert all(done.count(t) == 1 for t in ids)
