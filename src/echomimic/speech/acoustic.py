"""Language-independent mouth shapes from the spectrum (no recognizer).

Each articulation target is a clipped linear function of a small, level-independent description
of the frame and its neighbourhood:

* openness: F1 (LPC), the balance of low (< 1 kHz) to mid (1-4 kHz) energy, the loudness
  envelope and its local peak;
* rounding vs spreading: F2 and the spectral centroid (rounded vowels have low F2);
* bilabial closure: the nasal murmur (energy concentrated below 400 Hz) and stop silences inside
  speech (a local drop of level);
* labiodental: frication (energy above 4 kHz, zero-crossing rate) at low level.

The coefficients (:data:`COEFFICIENTS`) were fitted by ridge regression to the phoneme-derived
target curves (:func:`echomimic.speech.phonetics.truth_curves`) of speech synthesized by espeak-ng
in English, Mandarin, Spanish, German and Japanese with several voices and rates; run
``python -m echomimic.speech.acoustic`` to refit them and check them on held-out voices.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from ..types import ARTICULATION_KEYS
from .features import Spectral

__all__ = ["acoustic_features", "predict_articulation", "FEATURE_NAMES", "COEFFICIENTS",
           "fit_coefficients"]

FEATURE_NAMES: tuple[str, ...] = (
    "bias", "loud", "loud2", "loud_ctx", "loud_peak", "loud_dip", "voiced",
    "f1", "f2", "f1_ok", "tilt", "high", "low", "zcr", "centroid",
    "mel0", "mel1", "mel2", "mel3", "mel4", "mel5", "mel6", "mel7",
    "f1_ctx", "f2_ctx", "tilt_ctx", "low_ctx",
    "loud_m3", "f1_m3", "tilt_m3", "low_m3", "high_m3",
    "loud_p3", "f1_p3", "tilt_p3", "low_p3", "high_p3",
)


def _fill(v: np.ndarray, default: float) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(v)
    return np.where(ok, v, default), ok.astype(np.float64)


def _shift(v: np.ndarray, d: int) -> np.ndarray:
    """``v`` delayed by ``d`` hops (edge values repeated)."""
    if d == 0 or v.size == 0:
        return v
    idx = np.clip(np.arange(v.size) - d, 0, v.size - 1)
    return v[idx]


def acoustic_features(spec: Spectral, loudness: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) design matrix for :func:`predict_articulation`."""
    n = loudness.shape[0]
    L = loudness.astype(np.float64)
    f1, f1_ok = _fill(spec.f1[:n] / 1000.0, 0.5)
    f2, _ = _fill(spec.f2[:n] / 1000.0, 1.5)
    f1 = np.clip(f1, 0.15, 1.2)
    f2 = np.clip(f2, 0.5, 3.0)
    tilt = np.clip(spec.tilt[:n].astype(np.float64), -30, 40) / 20.0
    high = np.clip(spec.high[:n].astype(np.float64), -60, 0) / 30.0
    low = np.clip(spec.low[:n].astype(np.float64), -60, 0) / 30.0
    zcr = spec.zcr[:n].astype(np.float64) * 4.0
    cen = spec.centroid[:n].astype(np.float64) / 4000.0
    mel = spec.logmel[:n].astype(np.float64)
    # 16 bands -> 8 pairs, relative dB / 20
    mel8 = (mel[:, 0::2] + mel[:, 1::2]) / 40.0 if mel.shape[1] >= 16 else \
        np.resize(mel / 20.0, (n, 8))
    ctx = lambda v, k=7: uniform_filter1d(v, k, mode="nearest")  # noqa: E731
    peak = maximum_filter1d(L, 15, mode="nearest")
    cols = [
        np.ones(n), L, L * L, ctx(L), peak, peak - L, (pitch[:n] > 0).astype(np.float64),
        f1 * f1_ok, f2 * f1_ok, f1_ok, tilt, high, low, zcr, cen,
        *[mel8[:, j] for j in range(8)],
        ctx(f1 * f1_ok), ctx(f2 * f1_ok), ctx(tilt), ctx(low),
    ]
    for d in (3, -3):  # the same cues 30 ms before and after
        for v in (L, f1 * f1_ok, tilt, low, high):
            cols.append(_shift(v, d))
    return np.stack(cols, axis=1)


#: Fitted coefficients, one row per articulation key, columns as :data:`FEATURE_NAMES`.
COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "open": (
        0.00914, 0.03589, 0.07207, 0.43790, 0.09184, 0.05595, 0.00817, -0.04927, -0.01488,
        0.10385, 0.12477, -0.03912, -0.07781, -0.03575, 0.10122, -0.02940, 0.07453, 0.07472,
        0.06411, 0.00166, 0.16268, 0.01409, -0.13449, 0.09240, -0.07110, -0.00575, -0.27335,
        -0.03257, -0.01103, -0.01706, -0.03246, -0.03114, -0.14459, 0.01682, 0.01720, 0.03913,
        -0.00109,
    ),
    "round": (
        -0.06468, -0.11415, 0.37673, -0.02631, -0.02310, 0.09106, 0.00939, 0.06572, 0.00620,
        -0.08401, -0.21210, -0.05245, -0.01890, -0.02606, -0.29395, -0.10382, 0.07731, 0.04886,
        -0.14992, 0.02166, -0.25353, -0.07980, 0.23671, -0.04164, 0.05715, 0.02734, -0.00867,
        0.08338, 0.00445, 0.08243, -0.07189, 0.04872, 0.06360, -0.00212, 0.00826, 0.03273,
        0.06728,
    ),
    "spread": (
        0.01434, -0.16844, 0.24474, 0.11419, -0.06824, 0.10019, -0.00793, 0.04448, -0.00656,
        -0.05866, 0.19582, -0.19549, -0.03698, 0.01017, 0.22023, 0.06905, -0.06810, -0.07669,
        -0.08214, 0.09540, 0.26143, 0.15286, -0.11684, 0.03068, 0.00182, -0.17023, 0.18464,
        0.10599, -0.00562, 0.01040, -0.00948, 0.04660, 0.00475, 0.01458, 0.05227, -0.06445,
        0.06251,
    ),
    "close": (
        0.92149, -0.53381, 0.70937, -1.15441, -0.37795, 0.15587, -0.01332, 0.06561, 0.01454,
        -0.13979, -0.22258, 0.07566, 0.19050, 0.01854, -0.08023, 0.09816, -0.14265, 0.10377,
        -0.05846, -0.05509, -0.13462, 0.02780, -0.12611, -0.01314, 0.01869, -0.03419, 0.22327,
        0.06536, -0.00792, -0.05584, 0.04961, -0.04853, 0.14146, -0.02051, -0.01719, -0.06058,
        -0.10138,
    ),
    "labiodental": (
        0.01917, 0.18651, -0.28649, 0.12562, 0.15733, -0.02918, -0.00453, 0.01326, -0.00203,
        -0.02881, -0.00217, 0.09187, -0.01528, 0.00461, -0.15024, -0.07894, 0.03790, -0.01584,
        -0.01152, -0.03650, 0.04697, -0.05951, 0.03597, 0.11057, -0.08614, 0.04728, 0.16369,
        -0.03309, 0.02885, 0.01881, -0.01900, 0.02116, -0.04987, 0.00587, 0.00094, -0.04915,
        -0.01260,
    ),
}


def predict_articulation(X: np.ndarray, coefficients: dict | None = None,
                         smooth: int = 3) -> dict[str, np.ndarray]:
    """Articulation targets (clipped to [0, 1], lightly smoothed) from a design matrix."""
    coefs = coefficients or COEFFICIENTS
    out: dict[str, np.ndarray] = {}
    for key in ARTICULATION_KEYS:
        w = np.asarray(coefs[key], np.float64)
        y = X @ w
        if smooth > 1:
            y = uniform_filter1d(y, smooth, mode="nearest")
        out[key] = np.clip(y, 0.0, 1.0).astype(np.float32)
    return out


def fit_coefficients(Xs: list[np.ndarray], Ys: list[dict[str, np.ndarray]],
                     masks: list[np.ndarray], ridge: float = 1.0) -> dict[str, tuple[float, ...]]:
    """Ridge regression of each target on the features over the masked (speech) frames."""
    X = np.concatenate([x[m] for x, m in zip(Xs, masks)])
    reg = ridge * np.eye(X.shape[1])
    reg[0, 0] = 0.0
    A = X.T @ X + reg
    out = {}
    for key in ARTICULATION_KEYS:
        y = np.concatenate([yy[key][m] for yy, m in zip(Ys, masks)]).astype(np.float64)
        w = np.linalg.solve(A, X.T @ y)
        out[key] = tuple(float(round(v, 5)) for v in w)
    return out


# ---------------------------------------------------------------------------------------------
# Calibration against espeak-ng's own phoneme timing
# ---------------------------------------------------------------------------------------------

#: Calibration sentences per espeak-ng voice.
CALIBRATION_TEXT: dict[str, list[str]] = {
    "en-us": [
        "The quick brown fox jumps over the lazy dog.",
        "Please call Stella and ask her to bring these things with her from the store.",
        "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack "
        "for her brother Bob.",
        "Open the window wide and let the warm summer air move through the room.",
        "Father bought a large box of apples, but only a few of them were ripe.",
        "Who would have thought that a mouse could frighten such a huge animal?",
        "Jim made a wonderful plan for our journey through the mountains of Peru.",
        "We also need a small plastic snake and a big toy frog for the kids.",
        "How are you doing today? I hope the weather is fine where you are.",
        "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    ],
    "cmn": ["你好，今天天气很好。", "我们一起去北京吃饭吧。", "四是四，十是十，十四是十四，四十是四十。",
            "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。", "欢迎大家来到我们的节目，今天我们讨论人工智能。",
            "妈妈骂马，马慢，妈妈骂马。", "我喜欢在周末和朋友一起看电影。", "这个问题很难，我们需要更多的时间。"],
    "es": ["Hola, ¿cómo estás? Muy bien, gracias.", "El perro de San Roque no tiene rabo.",
           "Me gusta mucho la comida de mi abuela.",
           "Buenos días, señora, ¿puedo ayudarla con algo?"],
    "de": ["Guten Morgen, wie geht es dir?", "Schöne Grüße aus München und Berlin.",
           "Fischers Fritz fischt frische Fische.",
           "Das Wetter ist heute sehr schön, wir gehen spazieren."],
    "ja": ["こんにちは、げんきですか。", "ありがとうございます。",
           "わたしのなまえはたなかです。よろしくおねがいします。", "きょうはとてもいいてんきですね。"],
}
#: (variant, rate, pitch) used for fitting and for the held-out check.
CALIBRATION_TRAIN = (("m3", 150, 40), ("f2", 190, 60), (None, 175, 50))
CALIBRATION_HELDOUT = (("m1", 165, 45), ("f4", 215, 65))


def calibration_set(voices) -> list[tuple[str, np.ndarray, dict, np.ndarray, np.ndarray]]:
    """(voice, design, truth curves, speech mask, loudness) per calibration utterance."""
    from .analyze import measure
    from .features import prepare
    from .phonetics import truth_curves
    from .tts import synthesize

    items = []
    for base, texts in CALIBRATION_TEXT.items():
        for text in texts:
            for variant, rate, pitch in voices:
                voice = base + (f"+{variant}" if variant else "")
                audio, phones = synthesize(text, voice=voice, rate=rate, pitch=pitch)
                fr = measure(prepare(audio))
                truth = truth_curves(phones, fr.n * 0.01, 0.01)
                items.append((base, fr.design, {k: v[: fr.n] for k, v in truth.items()},
                              fr.activity >= 0.5, fr.loudness))
    return items


def _main() -> None:  # pragma: no cover - maintenance tool
    """Refit :data:`COEFFICIENTS` and print them with held-out correlations."""
    from .analyze import _gate

    train = calibration_set(CALIBRATION_TRAIN)
    held = calibration_set(CALIBRATION_HELDOUT)
    coefs = fit_coefficients([t[1] for t in train], [t[2] for t in train], [t[3] for t in train])
    for name, items in (("train", train), ("held-out", held)):
        per: dict[str, list] = {}
        for base, X, truth, mask, loud in items:
            art = _gate(predict_articulation(X, coefs), mask.astype(np.float32))
            per.setdefault(base, []).append((art["open"], truth["open"], loud))
        for base, rows in per.items():
            a = np.concatenate([r[0] for r in rows])
            t = np.concatenate([r[1] for r in rows])
            ld = np.concatenate([r[2] for r in rows])
            print(f"{name:9s} {base:6s} r(open,truth)={np.corrcoef(a, t)[0, 1]:.3f} "
                  f"r(open,loudness)={np.corrcoef(a, ld)[0, 1]:.3f}")
    print("COEFFICIENTS =", {k: list(v) for k, v in coefs.items()})


if __name__ == "__main__":  # pragma: no cover
    _main()
