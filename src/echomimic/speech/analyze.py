"""Speech audio -> :class:`echomimic.types.Speech` (activity, loudness, pitch, mouth targets).

Paths to the mouth-shape timeline:

* ``acoustic`` — language independent, from the spectrum (:mod:`.acoustic`);
* ``recognizer:en`` — English phones from pocketsphinx mapped through the phonetic table
  (:mod:`.phonetics`), fused with the acoustic path: ``open`` is the acoustic path's, the lip
  shapes (round, spread, close, labiodental) are mostly the recognizer's.

Language rule for ``lang="auto"`` (no language-ID model): the recognizer decodes a sample of the
speech (at most :data:`AUTO_SAMPLE_S` seconds of the busiest part) and the audio is taken as
English when the mean per-frame acoustic log score of the decoding (relative to the best senone)
is at least :data:`AUTO_MIN_SCORE` *and* the openness implied by the recognized phones agrees with
the acoustic openness (Pearson r over the speech frames >= :data:`AUTO_MIN_AGREEMENT`). The
English model fits English recordings better (about -7.7 against -9.5 to -10.5 for Mandarin on the
development recordings). This is a heuristic, not language identification: synthetic (espeak)
speech scores low in every language and takes the acoustic path. A wrong choice costs little in
openness, which is mostly acoustic in both paths. The decision and its numbers are kept in
``Speech.meta["auto"]``.

Outside speech activity every target is 0 except ``close``, which is 1 (mouth shut).

Clip-wide numbers are measured so that a long recording can be analysed in blocks ahead of the
renderer (:mod:`.incremental`): the openness gain is measured on the same busiest
:data:`AUTO_SAMPLE_S` seconds as the language rule, and the recognizer decodes a recording
longer than 12 s as utterances of a few seconds cut at its pauses. For recordings up to 8 s
(the gain) and 12 s (the recognizer) this is the whole clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AudioError
from ..types import ARTICULATION_KEYS, Audio, Speech
from . import acoustic
from .activity import speech_activity
from .features import (ANALYSIS_RATE, Spectral, frame_db, loudness_envelope, n_hops, pitch_yin,
                       prepare, spectral_features)
from .phonetics import REST, truth_curves

__all__ = ["analyze_speech", "AUTO_SAMPLE_S", "AUTO_MIN_AGREEMENT", "AUTO_MIN_SCORE",
           "ENGLISH_CODES"]

#: Longest stretch of audio the auto rule decodes (seconds).
AUTO_SAMPLE_S = 8.0
#: Minimum agreement (Pearson r) between recognizer and acoustic openness for English.
AUTO_MIN_AGREEMENT = 0.3
#: Minimum mean per-frame acoustic log score of the decoding for English.
AUTO_MIN_SCORE = -8.5

ENGLISH_CODES = {"en", "en-us", "en-gb", "en-uk", "eng", "english"}

#: Weight of the acoustic openness in the fused path (the acoustic model times the jaw better
#: than the phone loop: on the held-out synthesized set, r with the truth 0.84 against 0.75).
FUSE_OPEN_ACOUSTIC = 1.0
#: Weight of the recognizer in the fused lip shapes.
FUSE_SHAPE_RECOGNIZER = 0.7


@dataclass
class Frames:
    """Per-hop measurements shared by all paths."""

    x: np.ndarray
    hop_samples: int
    n: int
    db: np.ndarray
    activity: np.ndarray
    loudness: np.ndarray
    pitch: np.ndarray
    spectral: Spectral
    design: np.ndarray
    info: dict


def measure(x: np.ndarray, hop: float = 0.01) -> Frames:
    """Activity, loudness, pitch, spectral features and the acoustic design matrix per hop."""
    hs = int(round(hop * ANALYSIS_RATE))
    n = n_hops(len(x), hs)
    db = frame_db(x, hs)
    act, info = speech_activity(x, hs, db=db)
    active = act >= 0.5
    loud = loudness_envelope(db, active, info["noise_floor_db"])
    pitch = pitch_yin(x, hs, mask=active)
    spec = spectral_features(x, hs, mask=active)
    X = acoustic.acoustic_features(spec, loud, pitch)
    return Frames(x=x, hop_samples=hs, n=n, db=db, activity=act, loudness=loud, pitch=pitch,
                  spectral=spec, design=X, info=info)


def _gate(art: dict[str, np.ndarray], activity: np.ndarray) -> dict[str, np.ndarray]:
    """Blend towards the rest shape (closed mouth) outside speech."""
    a = np.clip(activity.astype(np.float64), 0.0, 1.0)
    a = np.where(a >= 0.5, 1.0, a)          # full shapes inside speech, soft fade at its edges
    out = {}
    for k, rest in zip(ARTICULATION_KEYS, REST):
        out[k] = np.clip(a * art[k] + (1.0 - a) * rest, 0.0, 1.0).astype(np.float32)
    return out


#: Openness range a clip should reach: the 95th percentile of ``open`` during speech. The
#: acoustic model is fitted on synthesized voices, which reach about 0.66-0.73; real recordings
#: (other voices, microphones, rooms) come out compressed (0.27-0.56 on the development
#: recordings), which would leave a mouth that barely opens. Such clips are scaled up.
OPEN_P95_TARGET = 0.65
#: Largest gain applied to a clip's openness (a near-silent or noise-only clip stays modest).
OPEN_GAIN_MAX = 2.2


def _open_gain(open_: np.ndarray, activity: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-clip gain of the openness target so its range during speech is natural; correlation,
    timing and closures are unchanged (a scale), and it never lowers a clip."""
    act = np.asarray(activity) >= 0.5
    if act.sum() < 20:
        return open_, 1.0
    p95 = float(np.percentile(open_[act], 95))
    if p95 <= 1e-3 or p95 >= OPEN_P95_TARGET:
        return open_, 1.0
    gain = min(OPEN_GAIN_MAX, OPEN_P95_TARGET / p95)
    return np.clip(open_ * gain, 0.0, 1.0).astype(np.float32), gain


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _busiest_window(activity: np.ndarray, width: int) -> tuple[int, int]:
    n = activity.shape[0]
    if n <= width:
        return 0, n
    c = np.concatenate([[0.0], np.cumsum(activity >= 0.5)])
    sums = c[width:] - c[:-width]
    s = int(np.argmax(sums))
    return s, s + width


def analyze_speech(audio: Audio, *, lang: str = "auto", hop: float = 0.01,
                   path: str = "auto") -> Speech:
    """Analyze speech audio into a per-hop mouth-shape timeline.

    Args:
        audio: mono float32 audio (any rate; resampled to 16 kHz).
        lang: ``"auto"``, an English code (``"en"``: recognizer path fused with the acoustic
            path) or any other language code (acoustic path).
        hop: analysis hop in seconds (5-40 ms).
        path: ``"auto"`` (the path follows ``lang``), ``"acoustic"`` or ``"recognizer"`` to
            force one path whatever the language.

    Returns:
        :class:`Speech` with ``method`` one of ``"recognizer:en"`` or ``"acoustic"``.

    The work is done by :class:`~echomimic.speech.incremental.SpeechAnalyzer`, which can also
    analyse a clip in blocks (with the same results) so that rendering starts before the whole
    clip is analysed.
    """
    from .incremental import SpeechAnalyzer

    return SpeechAnalyzer(audio, lang=lang, hop=hop, path=path).run()


def phone_timeline(phones: list, n: int, hop: float, duration: float
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Mouth targets (gated by the activity) and activity, ``n`` hops of ``hop`` seconds, from
    known phone timing: the activity is 1 inside every phone that is not a pause."""
    from .phonetics import is_pause

    art = truth_curves(list(phones), duration, hop)
    for k in art:
        a = np.asarray(art[k], np.float32)[:n]
        if len(a) < n:
            a = np.concatenate([a, np.full(n - len(a), a[-1] if len(a) else 0.0, np.float32)])
        art[k] = a
    act = np.zeros(n, np.float32)
    t = (np.arange(n) + 0.5) * hop
    for ph in phones:
        if not is_pause(ph.label):
            act[(t >= ph.start) & (t < ph.end)] = 1.0
    return _gate(art, act), act


def speech_from_phones(audio: Audio, phones: list, *, hop: float = 0.01) -> Speech:
    """A :class:`Speech` whose mouth timeline comes from known phone timing (for example the
    phoneme events of the TTS that made ``audio``), with activity, loudness and pitch measured
    from the audio. No recognition is involved."""
    if audio is None or np.asarray(audio.samples).size == 0:
        raise AudioError("audio is empty")
    x = prepare(audio)
    fr = measure(x, float(hop))
    duration = len(x) / ANALYSIS_RATE
    art, act = phone_timeline(phones, fr.n, fr.hop_samples / ANALYSIS_RATE, duration)
    return Speech(duration=duration, hop=fr.hop_samples / ANALYSIS_RATE, activity=act,
                  loudness=fr.loudness.astype(np.float32), pitch=fr.pitch.astype(np.float32),
                  articulation=art, phones=list(phones), lang="tts", method="tts-events",
                  meta={"noise_floor_db": round(fr.info["noise_floor_db"], 2)})
