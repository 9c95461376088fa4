"""English phone recognition with pocketsphinx's bundled US-English acoustic model.

The decoder runs in *allphone* mode (phone loop with the bundled ``en-us-phone.lm.bin`` phone
bigram), so it needs no transcript and no dictionary. Beams are narrowed from the defaults for
speed (about 0.02-0.03x real time on one core) with little loss on the vowels that drive the
mouth. Frames are 10 ms (100 fps).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..types import Phone

__all__ = ["recognize_phones", "Recognition", "DECODER_OPTIONS", "RecognizerProcess"]

#: pocketsphinx decoder options used for phone recognition.
DECODER_OPTIONS: dict = {
    "lw": 2.0,          # language weight of the phone bigram
    "beam": 1e-10,      # HMM beam (default 1e-48)
    "pbeam": 1e-10,     # phone-transition beam
    "topn": 2,          # Gaussians per codebook evaluated
}

_LN_BASE = math.log(1.0001)   # pocketsphinx's default log base


@dataclass
class Recognition:
    """Result of :func:`recognize_phones`."""

    phones: list[Phone]          # ARPAbet labels; pauses are "SIL" (fillers such as +NSN+ kept)
    frame_logscore: float        # mean acoustic log-likelihood per frame, relative to best senone
    seconds: float               # audio duration


def _new_decoder():
    """A fresh decoder for each call (about 0.1 s): a decoder carries state from one utterance
    to the next (cepstral mean, noise estimate), so a shared one would make the result depend on
    what it heard before."""
    from pocketsphinx import Decoder, get_model_path

    mp = get_model_path()
    return Decoder(
        hmm=os.path.join(mp, "en-us", "en-us"),
        allphone=os.path.join(mp, "en-us", "en-us-phone.lm.bin"),
        loglevel="FATAL",
        **DECODER_OPTIONS,
    )


def _pcm(x16k: np.ndarray) -> bytes:
    """The decoder's input: 16-bit little-endian PCM of float audio."""
    x = np.asarray(x16k, np.float32)
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def recognize_phones(x16k: np.ndarray) -> Recognition:
    """Recognize English phones in 16 kHz mono float audio.

    Each :class:`Phone` carries a confidence in ``weight``: the geometric-mean per-frame
    acoustic likelihood of the segment relative to the best-scoring senone, mapped to [0, 1].
    """
    return _recognize_pcm(_pcm(x16k))


def _recognize_pcm(pcm: bytes) -> Recognition:
    dec = _new_decoder()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    segs = [(s.word, int(s.start_frame), int(s.end_frame), float(s.ascore)) for s in dec.seg()]
    phones: list[Phone] = []
    total_log, total_frames = 0.0, 0
    for word, f0, f1, ascore in segs:
        nfr = max(1, f1 - f0 + 1)
        # ascore is exp(log-score); back to pocketsphinx log units per frame
        logs = math.log(max(ascore, 1e-300)) / _LN_BASE
        per_frame = logs / nfr
        total_log += logs
        total_frames += nfr
        conf = float(np.clip(math.exp(per_frame / 2000.0), 0.0, 1.0))
        label = "SIL" if word in ("<s>", "</s>", "<sil>") else word
        phones.append(Phone(start=f0 / 100.0, end=(f1 + 1) / 100.0, label=label, weight=conf))
    mean = total_log / total_frames if total_frames else 0.0
    return Recognition(phones=phones, frame_logscore=mean, seconds=len(pcm) / 2 / 16000.0)


# ------------------------------------------------------------------------------------------------
# decoding in a helper process
# ------------------------------------------------------------------------------------------------

#: ``ECHOMIMIC_RECOGNIZER_PROCESS=0`` decodes in this process only.
PROCESS_ENV = "ECHOMIMIC_RECOGNIZER_PROCESS"
#: The helper's first bytes: what answers is the recognizer, not another program.
_HELLO = b"echomimic-recognizer/1\n"


class RecognizerProcess:
    """pocketsphinx in a helper process (``python -m echomimic.speech.recognize``).

    The decoder keeps Python's interpreter lock while it decodes, so in the process that renders
    it would stop the renderer; in a helper the two run side by side. :meth:`submit` queues an
    utterance and returns a :class:`~concurrent.futures.Future` of its :class:`Recognition`
    (requests are answered in order); results equal :func:`recognize_phones`'s exactly (the same
    PCM goes to the same decoder, the floats come back in their shortest exact form). A helper
    that cannot start or dies fails its futures; callers then decode here.
    """

    def __init__(self) -> None:
        import queue
        import subprocess
        import sys
        import threading

        exe = sys.executable or ""
        if "python" not in os.path.basename(exe).lower():
            # embedded interpreters (uWSGI, ...) name their host program here, not Python
            raise OSError(f"no Python interpreter to run the recognizer in ({exe!r})")
        self._proc = subprocess.Popen([exe, "-m", "echomimic.speech.recognize"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)
        self._todo: "queue.Queue" = queue.Queue()
        self._waiting: "queue.Queue" = queue.Queue()
        self._writer = threading.Thread(target=self._write, name="echomimic-recognizer-in",
                                        daemon=True)
        self._reader = threading.Thread(target=self._read, name="echomimic-recognizer-out",
                                        daemon=True)
        self._writer.start()
        self._reader.start()

    def submit(self, x16k: np.ndarray):
        from concurrent.futures import Future

        fut: Future = Future()
        self._todo.put((_pcm(x16k), fut))
        return fut

    def _write(self) -> None:
        import struct

        while True:
            item = self._todo.get()
            if item is None:
                break
            pcm, fut = item
            self._waiting.put(fut)
            try:
                self._proc.stdin.write(struct.pack("<I", len(pcm)) + pcm)
                self._proc.stdin.flush()
            except (OSError, ValueError):
                break
        try:
            self._proc.stdin.close()
        except (OSError, ValueError):
            pass
        self._waiting.put(None)

    def _read(self) -> None:
        import json
        import struct

        if self._proc.stdout.read(len(_HELLO)) != _HELLO:      # not our helper: give it up
            self._fail_rest(EOFError("the recognizer process did not start"))
            return
        while True:
            fut = self._waiting.get()
            if fut is None:
                break
            try:
                head = self._proc.stdout.read(4)
                if len(head) < 4:
                    raise EOFError("the recognizer process ended")
                data = json.loads(self._proc.stdout.read(struct.unpack("<I", head)[0]))
                fut.set_result(Recognition(
                    phones=[Phone(start=a, end=b, label=c, weight=d) for a, b, c, d in data["phones"]],
                    frame_logscore=data["frame_logscore"], seconds=data["seconds"]))
            except Exception as exc:          # noqa: BLE001 - the caller decodes itself
                fut.set_exception(exc)
                self._fail_rest(exc)
                return

    def _fail_rest(self, exc: Exception) -> None:
        while True:
            fut = self._waiting.get()
            if fut is None:
                return
            fut.set_exception(exc)

    def close(self) -> None:
        """Stop the helper (pending requests are dropped)."""
        self._todo.put(None)
        try:
            self._proc.wait(timeout=0.5)      # an idle helper ends at the end of its input
        except Exception:                     # noqa: BLE001 - still decoding: not needed any more
            self._proc.kill()
            self._proc.wait()


def _serve() -> None:
    """The helper's loop: length-prefixed PCM in, length-prefixed JSON out, until end of input."""
    import json
    import struct
    import sys

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    out.write(_HELLO)
    out.flush()
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        pcm = inp.read(struct.unpack("<I", head)[0])
        rec = _recognize_pcm(pcm)
        data = json.dumps({"phones": [[p.start, p.end, p.label, p.weight] for p in rec.phones],
                           "frame_logscore": rec.frame_logscore,
                           "seconds": rec.seconds}).encode()
        out.write(struct.pack("<I", len(data)) + data)
        out.flush()


if __name__ == "__main__":
    _serve()
