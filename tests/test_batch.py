"""``echomimic batch``: many videos from a JSONL file, locally or through a real server.

The server test runs ``echomimic serve`` as a subprocess on 127.0.0.1; nothing else is contacted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from echomimic.batch import BatchInputError, parse_jobs, run_batch

FAST = {"crop": "face", "size": 128, "fps": 12}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("ECHOMIMIC_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "echomimic", "batch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _report(out: Path) -> dict[int, dict]:
    lines = (out / "batch_report.jsonl").read_text().splitlines()
    return {r["line"]: r for r in map(json.loads, lines)}


def _write_jobs(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut_png, short_speech):
    """A folder with a photo and a speech clip, named relative to the jobs file."""
    import shutil

    folder = tmp_path_factory.mktemp("batch_inputs")
    shutil.copy(astronaut_png, folder / "face.png")
    shutil.copy(short_speech.path, folder / "speech.wav")
    return folder


def test_local_batch_reports_bad_lines_and_resumes(inputs, tmp_path):
    from echomimic.media import probe_video

    jobs = _write_jobs(inputs / "jobs.jsonl", [
        {"id": "talk", "image": "face.png", "audio": "speech.wav", **FAST},
        {"image": "face.png", "text": "Hello there.", "lang": "en", **FAST},
        {"id": "gone", "image": "missing.png", "audio": "speech.wav", **FAST},
        {"output": "../escape.mp4", "image": "face.png", "audio": "speech.wav"},
        "this is not json",
        {"id": "talk", "image": "face.png", "audio": "speech.wav"},
        {"id": "odd", "image": "face.png", "audio": "speech.wav", "fps": "fast", "colour": 1},
    ])
    out = tmp_path / "out"
    first = _cli(str(jobs), "--out", str(out), "--jobs", "2", cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    report = _report(out)
    assert sorted(report) == [1, 2, 3, 4, 5, 6, 7]
    assert report[1]["status"] == "done" and report[2]["status"] == "done"
    assert report[2]["name"].startswith("job-")            # named from the line's hash
    codes = {n: report[n]["error"]["code"] for n in (3, 4, 5, 6, 7)}
    assert codes == {3: "input_missing", 4: "invalid_option", 5: "invalid_line",
                     6: "duplicate_name", 7: "invalid_option"}
    assert "line 5: failed: invalid_line" in first.stderr and "0 already done, 5 failed" in first.stdout
    videos = sorted(p.name for p in out.iterdir() if p.suffix == ".mp4")
    assert videos == sorted(["talk.mp4", report[2]["name"] + ".mp4"])
    assert not (tmp_path / "escape.mp4").exists() and not (inputs / "escape.mp4").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no partial files left
    info = probe_video(out / "talk.mp4")
    assert (info["width"], info["height"]) == (128, 128) and info["has_audio"]
    status = json.loads((out / "batch_status.json").read_text())["jobs"]
    assert status["talk"]["bytes"] == (out / "talk.mp4").stat().st_size

    # a rerun skips what is done; a truncated video is made again
    stamp = (out / report[2]["name"]).with_suffix(".mp4").stat().st_mtime_ns
    with open(out / "talk.mp4", "r+b") as fh:
        fh.truncate(100)
    second = run_batch(jobs, out, jobs=1)
    by_line = {o.line: o for o in second.outcomes}
    assert by_line[1].status == "done" and by_line[2].status == "skipped"
    assert second.exit_code == 1 and second.failed == 5
    assert (out / report[2]["name"]).with_suffix(".mp4").stat().st_mtime_ns == stamp
    assert probe_video(out / "talk.mp4")["width"] == 128

    # only the good lines: exit code 0, nothing to do
    good = _write_jobs(inputs / "good.jsonl", [
        {"id": "talk", "image": "face.png", "audio": "speech.wav", **FAST}])
    third = _cli(str(good), "--out", str(out), cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert "1 already done, 0 failed" in third.stdout


def test_unusable_input_exits_2(inputs, tmp_path):
    missing = _cli(str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert missing.returncode == 2 and "not found" in missing.stderr
    assert missing.stderr.count("\n") == 1                   # one line, no traceback
    not_jsonl = tmp_path / "list.json"
    not_jsonl.write_text('[{"image": "face.png"}]\n')
    with pytest.raises(BatchInputError):
        parse_jobs(not_jsonl)
    binary = tmp_path / "bytes.jsonl"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 20)
    with pytest.raises(BatchInputError):
        run_batch(binary, tmp_path / "o")
    jobs, bad = parse_jobs(_write_jobs(inputs / "names.jsonl", [
        {"id": name, "image": "face.png", "audio": "speech.wav"}
        for name in ("ok-1.v2", "a/b", "..", ".hidden", "/etc/x", "C:\\x", "x" * 101, "fine_2")]))
    assert [j.name for j in jobs] == ["ok-1.v2", "fine_2"] and len(bad) == 6


# ------------------------------------------------------------------------------------------------
# --server: a real `echomimic serve` on 127.0.0.1
# ------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from echomimic.service.store import JobStore

    data = tmp_path_factory.mktemp("batch_server")
    store = JobStore(f"sqlite:///{(data / 'jobs.db').resolve()}")
    _, key = store.create_key("batch")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOMIMIC_")}
    env.update(ECHOMIMIC_DATA_DIR=str(data), ECHOMIMIC_MAX_AUDIO_SECONDS="5",
               ECHOMIMIC_CACHE_DIR=os.environ.get("ECHOMIMIC_CACHE_DIR", str(data / "cache")))
    log = open(data / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "echomimic", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, (data / "serve.log").read_text()[-3000:]
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)
    yield base, key, store
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    log.close()
    store.close()


def test_batch_through_a_server(server, inputs, tmp_path):
    from PIL import Image

    from echomimic.media import probe_video

    base, key, store = server
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(inputs / "blank.png")
    jobs = _write_jobs(inputs / "remote.jsonl", [
        {"id": "remote", "image": "face.png", "audio": "speech.wav", **FAST},
        {"id": "noface", "image": "blank.png", "audio": "speech.wav", **FAST},
    ])
    out = tmp_path / "remote"
    summary = run_batch(jobs, out, server=base, api_key=key, jobs=2, poll_interval=0.2,
                        timeout=240)
    by_name = {o.name: o for o in summary.outcomes}
    assert by_name["remote"].status == "done", by_name["remote"]
    assert by_name["noface"].status == "failed" and by_name["noface"].error["code"] == "no_face"
    assert summary.exit_code == 1
    info = probe_video(out / "remote.mp4")
    assert (info["width"], info["height"]) == (128, 128) and info["has_audio"]
    task_id = by_name["remote"].task_id
    assert store.get(task_id).status == "completed"
    n_jobs = sum(store.count_by_status().values())

    # resumable: a rerun skips it; with the status file lost, the same task is found again
    again = run_batch(jobs, out, server=base, api_key=key, poll_interval=0.2, timeout=240)
    assert {o.name: o.status for o in again.outcomes}["remote"] == "skipped"
    (out / "batch_status.json").unlink()
    (out / "remote.mp4").unlink()
    third = run_batch(jobs, out, server=base, api_key=key, poll_interval=0.2, timeout=240)
    remote = {o.name: o for o in third.outcomes}["remote"]
    assert remote.status == "done" and remote.task_id == task_id
    assert sum(store.count_by_status().values()) == n_jobs      # nothing submitted twice
    assert probe_video(out / "remote.mp4")["width"] == 128

    # a line whose task failed on the server is submitted again as a new task on a rerun
    state = json.loads((out / "batch_status.json").read_text())
    state["jobs"]["remote"].update(status="failed", error={"code": "worker_lost", "message": "x"})
    (out / "batch_status.json").write_text(json.dumps(state))
    retried = {o.name: o for o in run_batch(jobs, out, server=base, api_key=key,
                                            poll_interval=0.2, timeout=240).outcomes}["remote"]
    assert retried.status == "done" and retried.task_id != task_id
    assert sum(store.count_by_status().values()) == n_jobs + 1

    # a wrong key: every line fails with the server's code, the exit code says so
    bad_key = _cli(str(jobs), "--out", str(tmp_path / "denied"), "--server", base,
                   "--api-key", "em_wrong", cwd=tmp_path)
    assert bad_key.returncode == 1
    assert [r["error"]["code"] for r in _report(tmp_path / "denied").values()] == ["unauthorized"] * 2
