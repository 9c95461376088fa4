#!/usr/bin/env python3
"""Drain of a queue of jobs through the REST service against the same jobs back to back.

Usage: python benchmarks/service_drain.py [--jobs 50] [--seconds 10] [--size 512]
       [--workers 2] [--broker redis|sqlite] [--media DIR] [--json]

Both sides run the same ``--jobs`` jobs: the astronaut photo (``crop=face``, ``--size``) and
``--seconds`` of a real recording (the media folder's recordings joined, as ``echomimic bench
--real`` makes it; synthesized speech when there is no media folder: the output says which).

1. Back to back: one process calls :func:`echomimic.animate` for each job in turn, after one
   warm-up job (imports, model loading), with its own analysis cache (the photo is analysed once,
   as in the service).
2. The service, on 127.0.0.1 in a temporary folder: a private redis-server (``--broker redis``,
   the default when it is installed) or the SQLite broker, the API (``echomimic serve --workers
   0``) and ``--workers`` ``echomimic worker`` processes (solo pool). One warm-up job per worker,
   then all the jobs are submitted at once and the queue drains. Time: first submission to the
   last ``finished_at``.

Reports both wall times, jobs per minute and the ratio of the service's throughput to the back to
back one (the issue's goal: at least 0.8), the load average before and after, and checks that
every job completed. Exit status 1 when a job did not complete. Everything it started is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_load import _connects, _free_port, _healthy, _wait  # noqa: E402


def _photo_png() -> bytes:
    import io

    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="PNG")
    return buf.getvalue()


def back_to_back(photo: Path, audio: Path, jobs: int, size: int, root: Path) -> dict:
    """The jobs one after the other in this process (after one warm-up job)."""
    os.environ["ECHOMIMIC_CACHE_DIR"] = str(root / "cache-b2b")
    from echomimic import animate

    out = root / "b2b"
    out.mkdir()
    t0 = time.perf_counter()
    animate(photo, out / "warm.mp4", audio=audio, crop="face", size=size)
    warm = time.perf_counter() - t0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(jobs):
        animate(photo, out / f"job{i}.mp4", audio=audio, crop="face", size=size)
    wall = time.perf_counter() - t0
    return {"warmup_s": round(warm, 2), "wall_s": round(wall, 2),
            "cpu_s": round(time.process_time() - c0, 2),
            "jobs_per_min": round(jobs / wall * 60, 2)}


def service(photo: Path, audio: Path, jobs: int, size: int, workers: int, broker: str,
            root: Path) -> dict:
    import httpx

    from echomimic.service.settings import Settings
    from echomimic.service.store import JobStore

    procs: list[subprocess.Popen] = []

    def spawn(cmd: list[str], env: dict, name: str) -> subprocess.Popen:
        p = subprocess.Popen(cmd, env=env, stdout=open(root / f"{name}.log", "ab"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        procs.append(p)
        return p

    data = root / "service"
    data.mkdir()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOMIMIC_")}
        env.update(ECHOMIMIC_DATA_DIR=str(data), ECHOMIMIC_CACHE_DIR=str(data / "cache"),
                   ECHOMIMIC_RATE_LIMIT="0", ECHOMIMIC_MAX_ACTIVE_JOBS="0")
        if broker == "redis":
            rport = _free_port()
            spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
                   "--appendonly", "no", "--dir", str(root)], env, "redis")
            env["ECHOMIMIC_BROKER_URL"] = f"redis://127.0.0.1:{rport}/0"
            _wait(lambda: _connects(rport), 20, "redis-server")
        store = JobStore(Settings(data_dir=data).database_url)
        key = store.create_key("drain")[1]
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        spawn([sys.executable, "-m", "echomimic", "serve", "--port", str(port),
               "--workers", "0"], env, "api")
        _wait(lambda: _healthy(base), 120, "the API")
        for i in range(workers):
            spawn([sys.executable, "-m", "echomimic", "worker", "--pool", "solo",
                   "--loglevel", "INFO"], env, f"worker-{i}")
        payload = {"files": {"image": ("face.png", photo.read_bytes(), "image/png"),
                             "audio": ("speech.wav", audio.read_bytes(), "audio/wav")},
                   "data": {"crop": "face", "size": str(size)}}
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"},
                          timeout=300) as c:
            warm = [c.post("/api/v1/generate", **payload).json()["task_id"]
                    for _ in range(workers)]
            _wait(lambda: all(store.get(t).status == "completed" for t in warm), 600, "warm-up",
                  interval=0.2)
            t_start = time.time()
            ids = []
            for _ in range(jobs):
                r = c.post("/api/v1/generate", **payload)
                if r.status_code != 202:
                    raise SystemExit(f"submission refused: {r.status_code} {r.text}")
                ids.append(r.json()["task_id"])
        t_submitted = time.time()
        _wait(lambda: all(store.get(t).status in ("completed", "failed", "cancelled")
                          for t in ids), 3600, "the jobs", interval=0.5)
        done = [store.get(t) for t in ids]
        t_end = max(j.finished_at for j in done if j.finished_at)
        wall = t_end - t_start
        return {"workers": workers, "broker": broker, "wall_s": round(wall, 2),
                "submit_all_s": round(t_submitted - t_start, 2),
                "jobs_per_min": round(jobs / wall * 60, 2),
                "completed": sum(j.status == "completed" for j in done)}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0, help="speech per job")
    ap.add_argument("--size", type=int, default=512, help="output size (crop=face)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--broker", choices=("redis", "sqlite"),
                    default="redis" if shutil.which("redis-server") else "sqlite")
    ap.add_argument("--media", default=None, help="media folder (default: ../shared/media)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from echomimic.bench import make_recording

    root = Path(tempfile.mkdtemp(prefix="echomimic-drain-"))
    try:
        photo = root / "astronaut.png"
        photo.write_bytes(_photo_png())
        audio, source = make_recording(args.seconds, root / "speech.wav", args.media)
        load_before = os.getloadavg()
        b2b = back_to_back(photo, audio, args.jobs, args.size, root)
        svc = service(photo, audio, args.jobs, args.size, args.workers, args.broker, root)
        figures = {"jobs": args.jobs, "seconds": args.seconds, "size": args.size,
                   "audio": source, "cpus": os.cpu_count(),
                   "load_before": [round(x, 2) for x in load_before],
                   "load_after": [round(x, 2) for x in os.getloadavg()],
                   "back_to_back": b2b, "service": svc,
                   "ratio": round(svc["jobs_per_min"] / b2b["jobs_per_min"], 3)}
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            for k, v in figures.items():
                print(f"{k:>14}: {v}")
        return 0 if svc["completed"] == args.jobs else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
