"""``echomimic stream``: a live session without the server, for OBS-style use.

The portrait talks to an RTMP server (``--rtmp``) with the speech of an audio file paced in real
time (``--audio``), or with each line typed on stdin spoken by the offline TTS (``--text-stdin``;
a line ``/interrupt`` cuts the current speech). Without a driver it lives silently (idle life)
until interrupted with Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

from .session import SAMPLE_RATE, Stream


def run_stream(image: Path, *, rtmp: str | None = None, audio: Path | None = None,
               text_stdin: bool = False, log: Callable[[str], None] = lambda m: None,
               **options: Any) -> dict[str, Any]:
    """Run a live session until its input ends; returns the session's figures."""
    from ..errors import InvalidOption

    if audio is not None and text_stdin:
        raise InvalidOption("give either --audio or --text-stdin, not both")
    push = None
    s = Stream(image, realtime=True, **options)
    try:
        if rtmp:
            from .rtmp import RtmpPush

            push = RtmpPush(s, rtmp)
            log(f"pushing {s.width}x{s.height} at {s.fps:g} fps to {push.info()['url']}")
        if audio is not None:
            from ..media import iter_audio_chunks

            t0 = time.perf_counter()
            sent = 0
            for chunk in iter_audio_chunks(audio, sample_rate=SAMPLE_RATE, chunk_seconds=0.1,
                                           max_duration=None):
                wait = t0 + sent / SAMPLE_RATE - time.perf_counter()
                if wait > 0:                      # paced in real time, like a live source
                    time.sleep(wait)
                s.push_audio(chunk[0], SAMPLE_RATE)
                sent += chunk.shape[1]
            s.end()
        elif text_stdin:
            log("type a line to speak it; /interrupt cuts the speech; end with Ctrl-D")
            for line in sys.stdin:
                line = line.strip()
                if line == "/interrupt":
                    s.interrupt()
                elif line:
                    s.say(line)
            s.end()
        while not s.closed:
            time.sleep(0.2)
            if push is not None and not push.running:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if push is not None:
            push.stop()
        s.close()
    out = s.info()
    if push is not None:
        out["rtmp"] = push.info()
    return out


__all__ = ["run_stream"]
