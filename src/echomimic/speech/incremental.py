"""Speech analysis in blocks (offline) and hop by hop (live).

Every per-hop measurement of :func:`~echomimic.speech.analyze_speech` needs only a bounded
stretch of audio around its hop: the level, pitch and spectrum of a hop come from a window of at
most 40 ms centred on it, the acoustic model sees the cues of 120 ms before and after, and its
cues are smoothed over at most 15 hops. What needs the whole clip is a handful of numbers:

* the **levels** of the clip (noise floor, speech level, loudness range) and the speech
  activity: a cheap pre-pass over the whole clip (the RMS level and WebRTC VAD of every hop, a
  few percentiles), about 1 ms per second of audio;
* the **clip-wide decisions**: the ``lang="auto"`` rule (English or not) and the openness gain
  (:data:`~echomimic.speech.analyze.OPEN_P95_TARGET`), both measured on the busiest
  :data:`~echomimic.speech.analyze.AUTO_SAMPLE_S` seconds of speech, which are analysed first;
* the English **phone recognition**, which decodes utterances: a recording longer than
  :data:`UTTERANCE_MAX_S` is cut at its longest pauses into utterances of a few seconds, decoded
  one by one, as the blocks need them.

:class:`SpeechAnalyzer` computes the rows of any range of hops on demand, with a margin of
:data:`MARGIN` hops on both sides, so a clip analysed in blocks gives the same values as the
clip analysed at once (the whole clip is one block: :func:`analyze_speech` is this class).
The offline pipeline runs it ahead of the renderer (:func:`echomimic.pipeline.animate`), so the
first frames are rendered while the rest of the clip is being analysed.

:class:`LiveAnalyzer` is the same stage for a live session: audio arrives in ticks, the per-hop
features (level, VAD decision, pitch, spectrum) of each new hop are computed once, when their
window is complete, and kept in a short history; the window-level steps (activity, loudness
range, acoustic model, openness gain, gate) run on the cached rows of the frame's window, with
running levels over the last :data:`LIVE_LEVEL_S` seconds and an openness gain learnt from the
last :data:`LIVE_GAIN_S` seconds of speech instead of the clip's.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from ..errors import AudioError, InvalidOption
from ..types import ARTICULATION_KEYS, Audio, Speech
from . import acoustic
from .activity import ActivityParams, noise_floor_db
from .features import (ANALYSIS_RATE, Spectral, frame_db, loudness_envelope, n_hops, pitch_yin,
                       prepare, spectral_features)
from .phonetics import REST, truth_curves

__all__ = ["SpeechAnalyzer", "LiveAnalyzer", "MARGIN", "UTTERANCE_MAX_S", "utterances",
           "clip_levels"]

#: Hops computed on both sides of a requested range, so that its rows equal the whole clip's
#: (acoustic cues smoothed over +-7 hops, model context +-12 hops, output smoothing +-1).
MARGIN = 24
#: Recordings up to this long are decoded by the recognizer as one utterance (seconds).
UTTERANCE_MAX_S = 12.0
#: Longer recordings are cut at pauses: the first utterance within these bounds (seconds) so
#: the first rows are ready soon ...
FIRST_UTTERANCE_S = (2.0, 6.0)
#: ... and the following ones within these.
NEXT_UTTERANCE_S = (4.0, UTTERANCE_MAX_S)
#: Utterances the helper process decodes ahead of the one being read (:meth:`SpeechAnalyzer.prefetch`).
PREFETCH = 2


def clip_levels(x: np.ndarray, hop_samples: int) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    """The pre-pass over the whole clip: per-hop level (dBFS), speech activity, the levels
    (``noise_floor_db``, ``speech_db``) and the loudness envelope."""
    from .activity import speech_activity

    db = frame_db(x, hop_samples)
    act, info = speech_activity(x, hop_samples, db=db)
    loud = loudness_envelope(db, act >= 0.5, info["noise_floor_db"])
    return db, act, info, loud


#: Rate of the idle-life grid the reference pitch is measured on (samples per second).
_GRID_RATE = 100.0


def _pitch_ref(pitch: np.ndarray, activity: np.ndarray, s: int, e: int, hop: float) -> float:
    """The speaker's reference pitch (Hz): the median voiced pitch of hops ``s:e`` (``pitch``
    holds them), sampled as idle life samples it (:func:`echomimic.motion.idle.idle_track`,
    whose brows rise on pitch accents above it); 0 when fewer than 10 samples are voiced."""
    n = activity.shape[0]
    k0, k1 = int(math.ceil(s * hop * _GRID_RATE)), int(math.ceil(e * hop * _GRID_RATE))
    t = np.arange(k0, k1) / _GRID_RATE
    idx = np.floor(t / hop).astype(np.int64)
    ok = (idx >= s) & (idx < e)
    p = np.where(ok, pitch[np.clip(idx - s, 0, max(0, e - s - 1))], 0.0).astype(np.float64)
    src = (np.arange(n) + 0.5) * hop
    a = np.interp(t, src, activity.astype(np.float64), left=float(activity[0]), right=0.0)
    voiced = (p > 40) & (a > 0.5)
    return float(np.median(p[voiced])) if voiced.sum() >= 10 else 0.0


def _true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    if mask.size == 0:
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def utterances(activity: np.ndarray, hop: float) -> list[tuple[int, int]]:
    """Hop ranges the recognizer decodes one by one: the whole clip when it lasts at most
    :data:`UTTERANCE_MAX_S`, else pieces cut in the middle of the longest pause within the
    bounds of :data:`FIRST_UTTERANCE_S` / :data:`NEXT_UTTERANCE_S` (at the upper bound when
    there is no pause)."""
    n = int(activity.shape[0])
    if n * hop <= UTTERANCE_MAX_S:
        return [(0, n)]
    quiet = np.asarray(activity) < 0.5
    out: list[tuple[int, int]] = []
    s = 0
    lo_s, hi_s = FIRST_UTTERANCE_S
    while (n - s) * hop > hi_s:
        lo, hi = s + int(round(lo_s / hop)), s + int(round(hi_s / hop))
        runs = _true_runs(quiet[lo:hi])
        if runs:
            a, b = max(runs, key=lambda r: (r[1] - r[0], -r[0]))
            cut = lo + (a + b) // 2
        else:
            cut = hi
        out.append((s, cut))
        s = cut
        lo_s, hi_s = NEXT_UTTERANCE_S
    out.append((s, n))
    return out


class SpeechAnalyzer:
    """The speech stage over one clip, by ranges of hops (see the module's description).

    ``analyzer.compute(start, stop)`` fills hops ``start:stop`` of :attr:`speech` (a
    :class:`Speech` whose activity and loudness are known from the start; pitch and mouth
    targets are filled as ranges are computed); :meth:`blocks` computes the clip front to back
    and yields how many hops are ready; :meth:`run` computes everything and returns the
    :class:`Speech`. The arguments are those of :func:`~echomimic.speech.analyze_speech`.
    """

    def __init__(self, audio: Audio, *, lang: str = "auto", hop: float = 0.01,
                 path: str = "auto"):
        from . import analyze as an

        if not isinstance(lang, str) or not lang.strip():
            raise InvalidOption("lang must be a language code or 'auto'")
        if not 0.005 <= float(hop) <= 0.04:
            raise InvalidOption(f"hop must be between 0.005 and 0.04 s, got {hop}")
        if audio is None or np.asarray(audio.samples).size == 0:
            raise AudioError("audio is empty")
        if path not in ("auto", "acoustic", "recognizer"):
            raise InvalidOption(f"path must be 'auto', 'acoustic' or 'recognizer', got {path!r}")
        code = lang.strip().lower().replace("_", "-")
        self.x = x = prepare(audio)
        self.hop_samples = hs = int(round(float(hop) * ANALYSIS_RATE))
        self.n = n = n_hops(len(x), hs)
        db, act, info, loud = clip_levels(x, hs)
        self.activity, self.loudness = act, loud
        self._active = act >= 0.5
        meta: dict = {"noise_floor_db": round(info["noise_floor_db"], 2),
                      "speech_db": round(info["speech_db"], 2)}
        has_speech = bool(np.any(self._active))
        self.hop = hs / ANALYSIS_RATE
        self._cache: tuple[int, int, np.ndarray, dict] | None = None
        # the clip-wide decisions, on the busiest stretch of speech
        width = int(round(an.AUTO_SAMPLE_S / self.hop))
        s, e = an._busiest_window(act, width) if has_speech else (0, 0)
        sample_open = None
        if has_speech:
            pitch_s, ac_s = self._acoustic(s, e)
            self._cache = (s, e, pitch_s, ac_s)
            sample_open = ac_s["open"]
        self._full_rec = None
        if path != "auto":
            english = path == "recognizer"
        elif code == "auto":
            if has_speech:
                english, meta["auto"] = self._decide_english(s, e, sample_open)
            else:
                english, meta["auto"] = False, {"english": False, "reason": "no speech"}
        else:
            english = code in an.ENGLISH_CODES or code.startswith("en-")
        self.english = bool(english and has_speech)
        if self.english:
            self.method, used = "recognizer:en", "en"
        else:
            self.method, used = "acoustic", (code if code != "auto" else "auto")
        # openness gain (the openness is the acoustic path's in both paths)
        self.gain = 1.0
        if has_speech:
            w = an.FUSE_OPEN_ACOUSTIC
            if w == 1.0:
                _, self.gain = an._open_gain(sample_open, act[s:e])
        if self.gain != 1.0:
            meta["open_gain"] = round(self.gain, 3)
        if has_speech:
            ref = _pitch_ref(self._cache[2], act, s, e, self.hop)
            if ref:
                meta["pitch_ref_hz"] = ref
        self._utts = utterances(act, self.hop) if self.english else []
        self._helper = None               # a RecognizerProcess decoding utterances ahead
        self._pending: dict = {}          # utterance -> Future of its Recognition
        self._decoded = 0                 # utterances decoded so far
        self._rc: dict[int, dict[str, np.ndarray]] = {}
        self._logscore = [0.0, 0]         # sum of per-frame scores x frames, frames
        rest = dict(zip(ARTICULATION_KEYS, REST))
        self.speech = Speech(
            duration=len(x) / ANALYSIS_RATE, hop=self.hop, activity=act.astype(np.float32),
            loudness=loud.astype(np.float32), pitch=np.zeros(n, np.float32),
            articulation={k: np.full(n, rest[k], np.float32) for k in ARTICULATION_KEYS},
            phones=[], lang=used, method=self.method, meta=meta)
        self.ready = 0                    # hops 0:ready are computed

    # ----------------------------------------------------------------------------------------

    def _acoustic(self, start: int, stop: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Pitch and ungated acoustic targets of hops ``start:stop`` (equal to the whole
        clip's: computed with :data:`MARGIN` hops on both sides)."""
        c = self._cache
        if c is not None and c[0] <= start and stop <= c[1]:
            i, j = start - c[0], stop - c[0]
            return c[2][i:j], {k: v[i:j] for k, v in c[3].items()}
        n, hs = self.n, self.hop_samples
        a, b = max(0, start - MARGIN), min(n, stop + MARGIN)
        pitch = pitch_yin(self.x, hs, mask=self._active, start=a, stop=b)
        spec = spectral_features(self.x, hs, mask=self._active, start=a, stop=b)
        X = acoustic.acoustic_features(spec, self.loudness[a:b], pitch)
        ac = acoustic.predict_articulation(X)
        i, j = start - a, stop - a
        return pitch[i:j], {k: v[i:j] for k, v in ac.items()}

    def prefetch(self, ahead: int = PREFETCH) -> None:
        """Decode the following utterances in a helper process, ``ahead`` of the one being read
        (see :class:`~echomimic.speech.recognize.RecognizerProcess`): the offline pipeline calls
        this so that recognition and rendering run side by side. Results are unchanged; without a
        helper (``ECHOMIMIC_RECOGNIZER_PROCESS=0``, or it cannot start) utterances are decoded
        here when they are needed."""
        import os

        from .recognize import PROCESS_ENV, RecognizerProcess

        if len(self._utts) < 2 or self._helper is not None:
            return
        if os.environ.get(PROCESS_ENV, "1").strip().lower() in ("0", "off", "false", "no"):
            return
        try:
            self._helper = RecognizerProcess()
        except OSError:
            return
        self._ahead = max(1, int(ahead))
        self._queue_next(0)

    def _queue_next(self, current: int) -> None:
        """Keep the utterances after ``current`` queued in the helper, up to the look-ahead."""
        if self._helper is None:
            return
        hs = self.hop_samples
        fr = self._full_rec
        for u in range(current + 1, min(len(self._utts), current + 1 + self._ahead)):
            a, b = self._utts[u]
            if u in self._rc or u in self._pending or (fr is not None and (fr[0], fr[1]) == (a, b)):
                continue
            self._pending[u] = self._helper.submit(self.x[a * hs: b * hs])

    def close(self) -> None:
        """Stop the helper process, if any (idempotent)."""
        if self._helper is not None:
            self._helper.close()
            self._helper = None
        self._pending.clear()

    def _recognize(self, start: int, stop: int, done=None):
        """Phones of hops ``start:stop`` decoded as one utterance, and their target curves;
        ``done``: a Future of that utterance's recognition from the helper, if it has one."""
        from .recognize import recognize_phones

        hs = self.hop_samples
        rec = None
        if done is not None:
            try:                              # a helper that hangs is given up, not waited for
                rec = done.result(timeout=30.0 + 10.0 * (stop - start) * self.hop)
            except Exception:                 # noqa: BLE001 - the helper failed: decode here
                self.close()
        if rec is None:
            rec = recognize_phones(self.x[start * hs: stop * hs])
        for ph in rec.phones:            # back to the clip's time base
            ph.start += start * hs / ANALYSIS_RATE
            ph.end += start * hs / ANALYSIS_RATE
        curves = truth_curves(rec.phones, stop * hs / ANALYSIS_RATE, self.hop, scheme="arpabet")
        return rec, {k: np.asarray(v[start:stop], np.float32) for k, v in curves.items()}

    def _decide_english(self, s: int, e: int, sample_open: np.ndarray) -> tuple[bool, dict]:
        """The auto language rule (see :mod:`echomimic.speech.analyze`)."""
        from . import analyze as an

        rec, curves = self._recognize(s, e)
        mask = self._active[s:e]
        r = an._pearson(curves["open"][mask], sample_open[mask])
        english = bool(mask.sum() >= 30 and r >= an.AUTO_MIN_AGREEMENT
                       and rec.frame_logscore >= an.AUTO_MIN_SCORE)
        info = {"agreement": round(r, 4), "frame_logscore": round(rec.frame_logscore, 2),
                "sample": [round(s * self.hop, 2), round(e * self.hop, 2)], "english": english}
        self._full_rec = (s, e, rec, curves)
        return english, info

    def _recognizer_rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Recognizer target curves of hops ``start:stop``, decoding utterances as needed."""
        out = {k: np.empty(stop - start, np.float32) for k in ARTICULATION_KEYS}
        for u, (a, b) in enumerate(self._utts):
            if b <= start or a >= stop:
                continue
            if u not in self._rc:
                fr = self._full_rec
                if fr is not None and (fr[0], fr[1]) == (a, b):
                    rec, curves = fr[2], fr[3]
                else:
                    rec, curves = self._recognize(a, b, self._pending.pop(u, None))
                self._queue_next(u)
                if u == len(self._utts) - 1:
                    self.close()                  # the last one: the helper is done
                self._rc[u] = curves
                self.speech.phones.extend(rec.phones)
                self.speech.phones.sort(key=lambda p: p.start)
                self._logscore[0] += rec.frame_logscore * (b - a)
                self._logscore[1] += b - a
                self.speech.meta["recognizer_frame_logscore"] = round(
                    self._logscore[0] / self._logscore[1], 2)
            curves = self._rc[u]
            lo, hi = max(a, start), min(b, stop)
            for k in ARTICULATION_KEYS:
                out[k][lo - start:hi - start] = curves[k][lo - a:hi - a]
        for u in [u for u in self._rc if self._utts[u][1] <= start]:
            del self._rc[u]                       # behind the front: no longer needed
        return out

    def compute(self, start: int, stop: int) -> None:
        """Fill hops ``start:stop`` of :attr:`speech`."""
        from . import analyze as an

        start, stop = max(0, int(start)), min(self.n, int(stop))
        if stop <= start:
            return
        pitch, ac = self._acoustic(start, stop)
        if self.english:
            rc = self._recognizer_rows(start, stop)
            art = {}
            w = an.FUSE_OPEN_ACOUSTIC
            art["open"] = w * ac["open"] + (1 - w) * rc["open"]
            g = an.FUSE_SHAPE_RECOGNIZER
            for k in ("round", "spread", "close", "labiodental"):
                art[k] = g * rc[k] + (1 - g) * ac[k]
        else:
            art = dict(ac)
        if self.gain != 1.0:
            art["open"] = np.clip(art["open"] * self.gain, 0.0, 1.0).astype(np.float32)
        art = an._gate(art, self.activity[start:stop])
        sp = self.speech
        sp.pitch[start:stop] = pitch
        for k in ARTICULATION_KEYS:
            sp.articulation[k][start:stop] = art[k]
        if start <= self.ready:
            self.ready = max(self.ready, stop)
        c = self._cache
        if c is not None and stop >= c[1]:
            self._cache = None                    # the sample's rows have been used

    def blocks(self, block: float = 1.0) -> Iterator[int]:
        """Compute the clip front to back in blocks of ``block`` seconds; yields the number of
        hops ready after each block."""
        step = max(1, int(round(block / self.hop)))
        while self.ready < self.n:
            self.compute(self.ready, self.ready + step)
            yield self.ready

    def run(self) -> Speech:
        """Compute the whole clip at once; the :class:`Speech`."""
        self.compute(self.ready, self.n)
        return self.speech


# ------------------------------------------------------------------------------------------------
# live: hop by hop
# ------------------------------------------------------------------------------------------------

#: Seconds of level history the live analyzer's noise floor and speech level are taken over.
LIVE_LEVEL_S = 3.0
#: Seconds of recent mouth openness the live analyzer's openness gain is taken over (the
#: whole-clip analysis measures its gain on the busiest 8 s of the clip).
LIVE_GAIN_S = 8.0
#: Hops of speech the live openness gain waits for before it moves from 1 (as the whole-clip
#: analysis needs 20 to measure one).
LIVE_GAIN_MIN_HOPS = 20
#: Fastest change of the live openness gain (per second): from 1 to the largest gain in about
#: 0.6 s, so a gain that is being learnt never makes the mouth jump.
LIVE_GAIN_SLEW = 2.0


class LiveAnalyzer:
    """The speech stage of a live session (acoustic path), hop by hop.

    Hops are on the absolute sample clock (hop ``j`` covers samples ``[j*hop, (j+1)*hop)``).
    :meth:`update` is given the session's audio history and computes the per-hop features of
    every hop whose window is complete and not yet computed; :meth:`window` gives the
    :class:`Speech` of a range of hops (activity, loudness, pitch, mouth targets) from the
    cached rows, computing the last few hops whose window is not complete yet from the samples
    available (zeros after them), as an analysis of that window alone would.
    """

    #: samples after a hop's centre its features need (the 40 ms pitch window)
    _RIGHT = int(math.ceil(ANALYSIS_RATE / 60.0))

    def __init__(self, hop: float = 0.01, history: float = 10.0, params=ActivityParams):
        import webrtcvad

        self.hop_samples = int(round(hop * ANALYSIS_RATE))
        self.hop = self.hop_samples / ANALYSIS_RATE
        self.p = params
        self._vad = webrtcvad.Vad(params.vad_mode)
        self.size = int(round(history / self.hop))
        k = self.size
        self.db = np.full(k, -120.0, np.float32)
        self.vad = np.zeros(k, bool)
        self.pitch = np.zeros(k, np.float32)
        self.spec = np.zeros((k, 22), np.float32)      # 16 log-mel + 6 scalars
        self.f12 = np.full((k, 2), np.nan)
        self.done = 0                                   # hops 0:done are computed (absolute)
        self.valid = 0                                  # hops 0:valid hold rows (the
        #                                                 last ones provisional)
        self._silence = None                            # the rows of digital silence
        # the openness gain (see analyze._open_gain), learnt from the recent speech: the
        # acoustic model's openness and the activity of the last LIVE_GAIN_S seconds of hops
        g = int(round(LIVE_GAIN_S / self.hop))
        self._open = np.zeros(g, np.float32)
        self._open_act = np.zeros(g, bool)
        self._open_end = 0                              # hops before this one are stored
        self.gain = 1.0
        self._gain_at = 0                               # the hop the gain was last moved at

    # per-hop features --------------------------------------------------------------------

    def _features(self, x: np.ndarray, x0: int, j0: int, j1: int):
        """Level, VAD, pitch and spectrum of absolute hops ``j0:j1`` from samples ``x`` that
        start at absolute sample ``x0`` (zeros outside)."""
        hs = self.hop_samples
        m = j1 - j0
        # local copy of the samples the hops need, on the hop grid of j0
        left = 300                                       # > half of the longest window
        a = j0 * hs - left
        b = j1 * hs + left
        seg = np.zeros(b - a, np.float32)
        lo, hi = max(a, x0), min(b, x0 + x.size)
        if hi > lo:
            seg[lo - a:hi - a] = x[lo - x0:hi - x0]
        # hop j0 of the clip is hop (left // hs) of seg only if left is a multiple of hs
        pad = (-left) % hs
        seg = np.concatenate([np.zeros(pad, np.float32), seg])
        base = (left + pad) // hs
        db = frame_db(seg, hs)[base:base + m]
        # VAD on the 10 ms frames of these hops (hops of 10 ms: one frame each)
        flen = ANALYSIS_RATE // 100
        vad = np.zeros(m, bool)
        for i in range(m):
            c = (base + i) * hs + hs // 2                # hop centre in seg
            f = (c // flen) * flen
            pcm = (np.clip(seg[f:f + flen], -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
            if len(pcm) == 2 * flen:
                vad[i] = self._vad.is_speech(pcm, ANALYSIS_RATE)
        pitch = pitch_yin(seg, hs, start=base, stop=base + m)
        spec = spectral_features(seg, hs, start=base, stop=base + m)
        return db, vad, pitch, spec

    def _store(self, j0: int, db, vad, pitch, spec: Spectral) -> None:
        idx = np.arange(j0, j0 + db.size) % self.size
        self.db[idx] = db
        self.vad[idx] = vad
        self.pitch[idx] = pitch
        self.spec[idx, :16] = spec.logmel
        self.spec[idx, 16:] = np.stack([spec.centroid, spec.tilt, spec.high, spec.low,
                                        spec.zcr, np.zeros_like(spec.zcr)], axis=1)
        self.f12[idx, 0], self.f12[idx, 1] = spec.f1, spec.f2

    def update(self, x: np.ndarray, x0: int, end: int, *, min_hops: int = 1,
               upto: int | None = None) -> None:
        """Compute the hops whose window lies before absolute sample ``end`` (the samples
        ``x`` start at absolute sample ``x0``), once at least ``min_hops`` of them are new (a
        batch costs little more than one hop). With ``upto``, hops up to ``upto`` whose window
        is not complete yet are computed too, from the samples there are (zeros after them),
        as an analysis of the audio so far would; they are computed again once complete."""
        hs = self.hop_samples
        last = (end - self._RIGHT - hs // 2) // hs + 1   # hops 0:last are complete
        j0 = max(self.done, last - self.size)
        stop = max(last, int(upto) if upto is not None else 0)
        if stop - j0 < max(1, min_hops) and not (upto is not None and stop > j0):
            return
        a, b = j0 * hs - 300 - x0, stop * hs + 300 - x0
        if not np.any(x[max(0, a):max(0, b)]):          # digital silence: known rows
            if self._silence is None:
                self._silence = self._features(np.zeros(1, np.float32), -10 ** 6, 0, 1)
            db, vad, pitch, spec = self._silence
            m = stop - j0
            spec = Spectral(*(np.repeat(getattr(spec, f), m, axis=0) for f in
                              ("logmel", "centroid", "tilt", "high", "low", "zcr", "f1", "f2")))
            self._store(j0, np.repeat(db, m), np.repeat(vad, m), np.repeat(pitch, m), spec)
        else:
            db, vad, pitch, spec = self._features(x, x0, j0, stop)
            self._store(j0, db, vad, pitch, spec)
        self.done = max(self.done, last)
        self.valid = stop

    # window-level steps --------------------------------------------------------------------

    def window(self, j0: int, j1: int) -> Speech:
        """The :class:`Speech` of absolute hops ``j0:j1`` (time 0 = hop ``j0``'s start), after
        :meth:`update` with ``upto >= j1``."""
        if j1 > self.valid:
            raise ValueError(f"hops up to {j1} are not analysed yet (update(upto=...) first)")
        hs = self.hop_samples
        db, vad, pitch, mel, sc, f12 = self._rows(j0, j1)
        n = db.size
        # levels over the recent history (running estimates of the clip's levels)
        h0 = max(0, j1 - int(round(LIVE_LEVEL_S / self.hop)), j1 - self.size)
        hist = self.db[np.arange(h0, j1) % self.size] if j1 > h0 else db
        act, floor, active = self._activity(db, vad, hist)
        spec = Spectral(logmel=mel, centroid=sc[:, 0], tilt=sc[:, 1], high=sc[:, 2],
                        low=sc[:, 3], zcr=sc[:, 4], f1=np.where(active, f12[:, 0], np.nan),
                        f2=np.where(active, f12[:, 1], np.nan))
        pitch = np.where(active, pitch, 0.0).astype(np.float32)
        loud = loudness_envelope(db, active, floor)
        X = acoustic.acoustic_features(spec, loud, pitch)
        from .analyze import _gate

        art = acoustic.predict_articulation(X)
        gain = self._learn_gain(j0, j1, art["open"], active)
        if gain != 1.0:
            art["open"] = np.clip(art["open"] * gain, 0.0, 1.0).astype(np.float32)
        art = _gate(art, act)
        meta = {"noise_floor_db": round(floor, 2)}
        if gain != 1.0:
            meta["open_gain"] = round(gain, 3)
        return Speech(duration=n * hs / ANALYSIS_RATE, hop=self.hop, activity=act,
                      loudness=loud, pitch=pitch, articulation=art, lang="und",
                      method="acoustic", meta=meta)

    def _learn_gain(self, j0: int, j1: int, open_: np.ndarray, active: np.ndarray) -> float:
        """The openness gain for a window of hops ``j0:j1``: the whole-clip analysis's rule
        (:func:`~echomimic.speech.analyze._open_gain`) on the openness of the last
        :data:`LIVE_GAIN_S` seconds of speech, moving at most :data:`LIVE_GAIN_SLEW` per second
        and kept through silences (a session's voice and microphone stay the same)."""
        from . import analyze as an

        g = self._open.size
        # hops whose window is complete replace what was stored for them (the last, provisional
        # hops of a window are stored when a later window has their samples)
        stop = min(j1, self.done)
        if j0 > self._open_end:                       # hops never seen (frames were dropped)
            self._open_act[np.arange(self._open_end, min(j0, self._open_end + g)) % g] = False
        if stop > j0:
            idx = np.arange(j0, stop) % g
            self._open[idx] = open_[:stop - j0]
            self._open_act[idx] = active[:stop - j0]
            self._open_end = max(self._open_end, stop)
        known = min(g, self._open_end)
        act = self._open_act if known == g else self._open_act[:known]
        target = self.gain
        if known and int(act.sum()) >= LIVE_GAIN_MIN_HOPS:
            o = self._open if known == g else self._open[:known]
            _, target = an._open_gain(o, act)
            target = float(target)
        steps = max(0, j1 - self._gain_at)
        self._gain_at = max(self._gain_at, j1)
        reach = LIVE_GAIN_SLEW * steps * self.hop
        self.gain = float(np.clip(target, self.gain - reach, self.gain + reach))
        return self.gain

    def _rows(self, j0: int, j1: int):
        idx = np.arange(j0, max(j0, j1)) % self.size
        return (self.db[idx], self.vad[idx], self.pitch[idx], self.spec[idx, :16],
                self.spec[idx, 16:], self.f12[idx])

    def _activity(self, db: np.ndarray, vad: np.ndarray, hist: np.ndarray):
        """:func:`~echomimic.speech.activity.speech_activity`'s steps on a window, with the
        noise floor and speech level of the recent history."""
        from .activity import smooth_activity

        p, hop = self.p, self.hop
        floor = noise_floor_db(hist, hop)
        loud_h = hist > max(floor + p.margin_db, p.abs_floor_db)
        peak = float(np.percentile(hist[loud_h], 95)) if loud_h.any() else float(hist.max())
        loud = db > max(floor + p.margin_db, p.abs_floor_db)
        raw = vad & loud & (db > peak - p.below_peak_db)
        act, _ = smooth_activity(raw, hop, p)
        return act, floor, act >= 0.5

    def forget_after(self, sample: int) -> None:
        """Recompute the hops whose window reaches absolute ``sample`` or later (the audio from
        there was replaced, e.g. silenced by an interrupt)."""
        j = (int(sample) - self._RIGHT - self.hop_samples) // self.hop_samples
        self.done = max(0, min(self.done, j))
