"""Processes for the service and UI tests: a private Redis server, `echomimic serve`,
`echomimic worker` and `echomimic ui` as real subprocesses (so they can be killed with SIGKILL),
all on 127.0.0.1.

Not a test module: imported by tests/test_service*.py and tests/test_ui*.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")
NO_REDIS = "redis-server is not installed (apt-get install redis-server)"


def find_chromium() -> str | None:
    """Debian's Chromium (or ``$ECHOMIMIC_CHROMIUM``), for the browser tests; None when absent."""
    for candidate in (os.environ.get("ECHOMIMIC_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy; fail the test with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_until_answers(proc: "Proc", url: str, what: str, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200; fail with the process's log if it exits first."""
    import httpx

    def up() -> bool:
        assert proc.alive(), f"{what} exited:\n{proc.tail()}"
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout, f"{what} to answer at {url}", interval=0.1)


class Proc:
    """A child process whose output goes to a log file (shown when a test fails)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.log = args, log
        self._fh = open(log, "ab")
        self.popen = subprocess.Popen(args, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as when a machine dies."""
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._fh.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._fh.close()

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


class RedisServer:
    """A throw-away redis-server on a free 127.0.0.1 port, without persistence."""

    def __init__(self, folder: Path):
        if REDIS_SERVER is None:
            raise RuntimeError(NO_REDIS)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = Proc([REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port),
                          "--save", "", "--appendonly", "no", "--dir", str(folder)],
                         dict(os.environ), folder / "redis.log")
        import redis

        self.client = redis.Redis.from_url(self.url)
        wait_for(self._ping, 20, "redis-server to start")

    def _ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def stop(self) -> None:
        self.client.close()
        self.proc.stop()


def service_env(data_dir: Path, **variables: str) -> dict[str, str]:
    """The environment of the service's processes: the data folder plus ``ECHOMIMIC_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOMIMIC_")}
    env["ECHOMIMIC_DATA_DIR"] = str(data_dir)
    env["ECHOMIMIC_CACHE_DIR"] = os.environ.get("ECHOMIMIC_CACHE_DIR", str(data_dir / "cache"))
    env.update({k: str(v) for k, v in variables.items()})
    return env


def start_api(env: dict[str, str], log_dir: Path, *, port: int | None = None,
              workers: int = 0) -> tuple[Proc, str]:
    """``echomimic serve`` on 127.0.0.1; returns the process and its base URL once it answers."""
    port = port or free_port()
    proc = Proc([sys.executable, "-m", "echomimic", "serve", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", str(workers)], env,
                log_dir / f"api-{port}.log")
    base = f"http://127.0.0.1:{port}"
    wait_until_answers(proc, f"{base}/healthz", "the API")
    return proc, base


def start_worker(env: dict[str, str], log_dir: Path, *, pool: str = "solo",
                 concurrency: int = 1, name: str = "worker") -> Proc:
    """``echomimic worker`` (a separate process consuming the broker's queue)."""
    return Proc([sys.executable, "-m", "echomimic", "worker", "--pool", pool,
                 "--concurrency", str(concurrency), "--loglevel", "INFO"], env,
                log_dir / f"{name}-{time.monotonic_ns()}.log")
