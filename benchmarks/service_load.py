#!/usr/bin/env python3
"""Load test of the REST service: many tiny jobs submitted at once by several clients.

Usage: python benchmarks/service_load.py [--jobs 50] [--clients 5] [--workers 2]
       [--broker redis|sqlite] [--size 64] [--json]

Starts everything on 127.0.0.1 in a temporary folder: a private redis-server (``--broker redis``,
the default when redis-server is installed) or the SQLite broker in the data folder, the API
(``echomimic serve --workers 0``) and ``--workers`` separate ``echomimic worker`` processes
(solo pool, one job at a time each). Each of ``--clients`` threads has its own API key and submits
its share of ``--jobs`` at once (a 160 x 160 photo and 1 s of speech, ``crop=face``, ``--size``).

Reports throughput (completed jobs per minute, from the first submission to the last completion),
p50/p95 submit latency (the POST, which decodes the inputs and finds the face) and p50/p95
end-to-end latency (submission to completion, as ``finished_at - created_at`` in the store), and
checks that every job completed exactly once (one run, attempt 1, one result file). Exit status 1
when a check fails. Everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def _percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _inputs(size: int) -> dict:
    import numpy as np
    import skimage.data
    from PIL import Image

    from echomimic.speech import synthesize, write_wav
    from echomimic.types import Audio

    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).resize((160, 160)).save(buf, format="PNG")
    audio, _ = synthesize("Hello there, friend.", lang="en")
    samples = np.asarray(audio.samples, np.float32)[: audio.sample_rate]
    folder = Path(tempfile.mkdtemp(prefix="echomimic-load-in-"))
    try:
        wav_bytes = write_wav(folder / "one.wav",
                              Audio(samples=samples, sample_rate=audio.sample_rate)).read_bytes()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"files": {"image": ("face.png", buf.getvalue(), "image/png"),
                      "audio": ("speech.wav", wav_bytes, "audio/wav")},
            "data": {"crop": "face", "size": str(size)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--broker", choices=("redis", "sqlite"),
                    default="redis" if shutil.which("redis-server") else "sqlite")
    ap.add_argument("--size", type=int, default=64, help="output size (crop=face)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import httpx

    from echomimic.service.settings import Settings
    from echomimic.service.store import JobStore

    root = Path(tempfile.mkdtemp(prefix="echomimic-load-"))
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []

    def spawn(cmd: list[str], env: dict, name: str) -> subprocess.Popen:
        log = root / f"{name}.log"
        logs.append(log)
        p = subprocess.Popen(cmd, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(p)
        return p

    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOMIMIC_")}
        env.update(ECHOMIMIC_DATA_DIR=str(root), ECHOMIMIC_CACHE_DIR=str(root / "cache"),
                   ECHOMIMIC_RATE_LIMIT="0", ECHOMIMIC_MAX_ACTIVE_JOBS="0")
        if args.broker == "redis":
            rport = _free_port()
            spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
                   "--appendonly", "no", "--dir", str(root)], env, "redis")
            env["ECHOMIMIC_BROKER_URL"] = f"redis://127.0.0.1:{rport}/0"
            _wait(lambda: _connects(rport), 20, "redis-server")
        store = JobStore(Settings(data_dir=root).database_url)
        keys = [store.create_key(f"client-{i}")[1] for i in range(args.clients)]
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        spawn([sys.executable, "-m", "echomimic", "serve", "--port", str(port),
               "--workers", "0"], env, "api")
        _wait(lambda: _healthy(base), 60, "the API")
        for i in range(args.workers):
            spawn([sys.executable, "-m", "echomimic", "worker", "--pool", "solo",
                   "--loglevel", "INFO"], env, f"worker-{i}")
        payload = _inputs(args.size)
        # one job first, so that model loading in the workers is not counted
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {keys[0]}"},
                          timeout=120) as c:
            warm = [c.post("/api/v1/generate", **payload).json()["task_id"]
                    for _ in range(args.workers)]
        _wait(lambda: all(store.get(t).status == "completed" for t in warm), 300, "warm-up")

        submit_s: list[float] = []
        lock = threading.Lock()

        def submit(i: int) -> str:
            key = keys[i % len(keys)]
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"},
                              timeout=120) as c:
                t0 = time.perf_counter()
                r = c.post("/api/v1/generate", **payload)
                dt = time.perf_counter() - t0
            if r.status_code != 202:
                raise SystemExit(f"submission refused: {r.status_code} {r.text}")
            with lock:
                submit_s.append(dt)
            return r.json()["task_id"]

        t_start = time.time()
        with ThreadPoolExecutor(args.clients) as pool:
            ids = list(pool.map(submit, range(args.jobs)))
        _wait(lambda: all(store.get(t).status in ("completed", "failed", "cancelled")
                          for t in ids), args.timeout, "the jobs", interval=0.2)
        jobs = [store.get(t) for t in ids]
        t_end = max(j.finished_at for j in jobs)
        completed_lines: list[str] = []
        for log in logs:
            if log.name.startswith("worker-"):
                completed_lines += re.findall(r"job ([0-9a-f]{32}): completed",
                                              log.read_text(errors="replace"))
        problems = []
        for j in jobs:
            results = sorted(p.name for p in (root / "jobs" / j.id).glob("result*.mp4"))
            if j.status != "completed" or j.attempts != 1 or results != ["result.1.mp4"] \
                    or completed_lines.count(j.id) != 1:
                problems.append(f"{j.id}: {j.status}, attempts {j.attempts}, files {results}, "
                                f"runs {completed_lines.count(j.id)}")
        e2e = [j.finished_at - j.created_at for j in jobs if j.finished_at]
        figures = {
            "jobs": args.jobs, "clients": args.clients, "workers": args.workers,
            "broker": args.broker, "size": args.size, "distinct_ids": len(set(ids)),
            "completed_once": args.jobs - len(problems),
            "wall_s": round(t_end - t_start, 2),
            "throughput_jobs_per_min": round(args.jobs / max(1e-9, t_end - t_start) * 60, 1),
            "submit_p50_s": round(_percentile(submit_s, 0.5), 3),
            "submit_p95_s": round(_percentile(submit_s, 0.95), 3),
            "e2e_p50_s": round(_percentile(e2e, 0.5), 2),
            "e2e_p95_s": round(_percentile(e2e, 0.95), 2),
            "cpus": os.cpu_count(),
        }
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            for k, v in figures.items():
                print(f"{k:>24}: {v}")
        for line in problems:
            print("problem:", line, file=sys.stderr)
        return 1 if problems or len(set(ids)) != args.jobs else 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        shutil.rmtree(root, ignore_errors=True)


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _healthy(base: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
