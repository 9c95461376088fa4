"""How fast the web UI starts and renders, next to the command line.

Measures, on 127.0.0.1 only:

(a) the time from launching ``echomimic ui`` to its page answering HTTP 200 (median of ``--starts``
    launches);
(b) the time to render the demo (the bundled photo and synthesized speech, as ``echomimic demo``)
    through the page, driven by Playwright and the system's Chromium: from the click on
    "Make the video" to the video playing in the page; next to ``echomimic demo`` run as a
    command (whole process, and the render time it reports).

    python benchmarks/ui_speed.py [--starts 3] [--chromium /usr/bin/chromium] [--json]

Needs the ``ui`` extra and the ``playwright`` package (no browser download: ``--chromium`` or
``$ECHOMIMIC_CHROMIUM`` or ``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str, float]:
    """Launch ``echomimic ui``; return the process, its URL and the seconds to the first 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "echomimic", "ui", "--port", str(port)],
                            env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"echomimic ui exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc, url, time.perf_counter() - t0
        except OSError:
            pass
        if time.perf_counter() - t0 > 120:
            proc.kill()
            raise SystemExit("echomimic ui did not answer within 120 s")
        time.sleep(0.02)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def render_demo_in_page(url: str, chromium: str) -> dict[str, float]:
    """Load the demo in the page, click "Make the video", wait for the video to play."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        outside: list[str] = []

        def route(r):
            host = urlparse(r.request.url).hostname
            if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.goto(url, wait_until="load")
        page.wait_for_selector("#generate")
        page.locator("#demo-button").click()
        page.wait_for_function("() => document.querySelector('#face-status').innerText"
                               ".includes('face found')", timeout=120_000)
        page.locator("#audio-input audio, #audio-input .waveform-container").first.wait_for(
            state="attached", timeout=60_000)
        t0 = time.perf_counter()
        page.locator("#generate").click()
        page.wait_for_function("() => { const v = document.querySelector('#result video');"
                               " return v && Number.isFinite(v.duration) && v.duration > 0; }",
                               timeout=300_000)
        wall = time.perf_counter() - t0
        duration = float(page.evaluate("() => document.querySelector('#result video').duration"))
        summary = page.locator("#summary").inner_text()
        browser.close()
    made = re.search(r"made in ([0-9.]+) s", summary)
    return {"page_click_to_video_s": wall, "video_duration_s": duration,
            "pipeline_s": float(made.group(1)) if made else float("nan"),
            "non_loopback_requests": float(len(outside))}


def cli_demo(env: dict[str, str], folder: Path) -> dict[str, float]:
    """``echomimic demo`` as a command: the whole process, and the render time it prints."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "echomimic", "demo", "--quiet", "--folder",
                          str(folder)], env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"echomimic demo failed: {out.stderr}")
    made = re.search(r"in ([0-9.]+) s \(", out.stdout)
    return {"process_s": wall, "pipeline_s": float(made.group(1)) if made else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--starts", type=int, default=3, help="launches measured for (a)")
    ap.add_argument("--chromium", default=os.environ.get("ECHOMIMIC_CHROMIUM")
                    or shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="echomimic-ui-bench-"))
    env = dict(os.environ, ECHOMIMIC_UI_DIR=str(work / "ui"),
               ECHOMIMIC_CACHE_DIR=str(work / "cache"))
    figures: dict[str, float] = {}
    try:
        starts = []
        for k in range(max(1, args.starts)):
            proc, _, seconds = start_ui(env, work / f"ui{k}.log")
            starts.append(seconds)
            stop(proc)
        figures["ui_start_to_http_200_s_median"] = statistics.median(starts)
        figures["ui_start_to_http_200_s_max"] = max(starts)

        # the CLI first (it also fills the analysis cache; the page then finds the same photo
        # cached, as the CLI does on its second run): run it twice, keep the second
        cli_demo(env, work / "demo0")
        cli = cli_demo(env, work / "demo1")
        figures["cli_demo_process_s"] = cli["process_s"]
        figures["cli_demo_pipeline_s"] = cli["pipeline_s"]

        proc, url, _ = start_ui(env, work / "ui-render.log")
        try:
            page = render_demo_in_page(url, args.chromium)
        finally:
            stop(proc)
        figures["ui_demo_click_to_video_s"] = page["page_click_to_video_s"]
        figures["ui_demo_pipeline_s"] = page["pipeline_s"]
        figures["ui_demo_video_duration_s"] = page["video_duration_s"]
        figures["ui_non_loopback_requests"] = page["non_loopback_requests"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for k, v in figures.items():
            print(f"{k:34s} {v:8.2f}")


if __name__ == "__main__":
    main()
