"""Language-independent mouth shapes from the spectrum (no recognizer).

A small description of every 10 ms hop is computed, level-independent where it can be:

* openness cues: F1 (LPC), the balance of low (< 1 kHz) to mid (1-4 kHz) energy, the loudness
  envelope, its local peak and dip;
* rounding vs spreading cues: F2 and the spectral centroid (rounded vowels have low F2), 8
  log-mel band shapes;
* bilabial closure cues: the nasal murmur (energy concentrated below 400 Hz) and stop silences;
* labiodental cues: frication (energy above 4 kHz, zero-crossing rate) at low level.

These 36 cues, taken at 11 moments from 120 ms before to 120 ms after the hop
(:data:`CONTEXT_OFFSETS`), go through a small neural network (one hidden layer of ``tanh``
units, sigmoid outputs) to the five articulation targets. The network was fitted to the
phoneme-derived target curves (:func:`echomimic.speech.phonetics.truth_curves`) of speech
synthesized by espeak-ng in English, Mandarin, Japanese, Spanish and German with the *tune*
voices, rates and pitches of :mod:`echomimic.quality.evalset`, clean and with noise and
reverberation; the *held-out* settings are only used to report. The weights live in
:mod:`._acoustic_model`; refit them with ``python -m echomimic.speech.acoustic`` (deterministic:
fixed initialisation, L-BFGS).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from ..types import ARTICULATION_KEYS
from .features import Spectral

__all__ = ["acoustic_features", "context_features", "predict_articulation", "FEATURE_NAMES",
           "CONTEXT_OFFSETS", "AcousticModel", "load_model", "fit_model"]

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


#: Hops (10 ms) before (< 0) and after (> 0) each hop whose cues the model sees.
CONTEXT_OFFSETS: tuple[int, ...] = (-12, -8, -5, -3, -1, 0, 1, 3, 5, 8, 12)
#: Hops predicted at once (bounds the memory of the stacked context for long audio).
_BLOCK = 4096


def context_features(X: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``start:stop`` of the context matrix: the cues of :func:`acoustic_features` (without
    the bias column) at every offset of :data:`CONTEXT_OFFSETS` (edges repeated)."""
    n = X.shape[0]
    stop = n if stop is None else stop
    base = np.arange(start, stop)
    cues = X[:, 1:]
    return np.concatenate([cues[np.clip(base + d, 0, n - 1)] for d in CONTEXT_OFFSETS], axis=1)


@dataclass(frozen=True)
class AcousticModel:
    """One-hidden-layer network: ``sigmoid(tanh(((x - mean) / scale) @ w1 + b1) @ w2 + b2)``;
    outputs in the order of :data:`ARTICULATION_KEYS`."""

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        h = np.tanh(((Z - self.mean) / self.scale) @ self.w1 + self.b1)
        return 1.0 / (1.0 + np.exp(-(h @ self.w2 + self.b2)))

    def to_arrays(self) -> list[np.ndarray]:
        return [self.mean, self.scale, self.w1, self.b1, self.w2, self.b2]

    @classmethod
    def from_flat(cls, flat: np.ndarray, n_in: int, hidden: int, n_out: int) -> "AcousticModel":
        shapes = [(n_in,), (n_in,), (n_in, hidden), (hidden,), (hidden, n_out), (n_out,)]
        parts, i = [], 0
        for shp in shapes:
            k = int(np.prod(shp))
            parts.append(np.asarray(flat[i:i + k], np.float64).reshape(shp))
            i += k
        if i != flat.size:
            raise ValueError(f"model data has {flat.size} values, expected {i}")
        return cls(*parts)


@lru_cache(maxsize=1)
def load_model() -> AcousticModel:
    """The shipped model (:mod:`._acoustic_model`)."""
    import base64

    from . import _acoustic_model as m

    flat = np.frombuffer(base64.b64decode(m.DATA), dtype="<f4").astype(np.float64)
    n_in = (len(FEATURE_NAMES) - 1) * len(CONTEXT_OFFSETS)
    return AcousticModel.from_flat(flat, n_in, m.HIDDEN, len(ARTICULATION_KEYS))


def predict_articulation(X: np.ndarray, model: AcousticModel | None = None,
                         smooth: int = 3) -> dict[str, np.ndarray]:
    """Articulation targets (in [0, 1], lightly smoothed) from an :func:`acoustic_features`
    design matrix."""
    model = model or load_model()
    n = X.shape[0]
    Y = np.zeros((n, len(ARTICULATION_KEYS)))
    for i0 in range(0, n, _BLOCK):
        i1 = min(n, i0 + _BLOCK)
        Y[i0:i1] = model(context_features(X, i0, i1))
    out: dict[str, np.ndarray] = {}
    for j, key in enumerate(ARTICULATION_KEYS):
        y = Y[:, j]
        if smooth > 1 and n:
            y = uniform_filter1d(y, smooth, mode="nearest")
        out[key] = np.clip(y, 0.0, 1.0).astype(np.float32)
    return out


def fit_model(Xs: list[np.ndarray], Ys: list[dict[str, np.ndarray]], masks: list[np.ndarray],
              *, hidden: int = 32, l2: float = 3e-3, iterations: int = 400,
              seed: int = 0) -> AcousticModel:
    """Fit the network by L-BFGS on the masked (speech) hops: mean squared error of the five
    targets plus ``l2`` times the squared weights. Deterministic for a given ``seed``."""
    from scipy.optimize import minimize

    Z = np.concatenate([context_features(x)[m] for x, m in zip(Xs, masks)])
    Y = np.stack([np.concatenate([y[k][m] for y, m in zip(Ys, masks)])
                  for k in ARTICULATION_KEYS], axis=1).astype(np.float64)
    mean, scale = Z.mean(axis=0), Z.std(axis=0) + 1e-6
    Z = (Z - mean) / scale
    n, d = Z.shape
    k = Y.shape[1]
    rng = np.random.Generator(np.random.PCG64(seed))
    shapes = [(d, hidden), (hidden,), (hidden, k), (k,)]
    sizes = [int(np.prod(s)) for s in shapes]

    def unpack(w):
        out, i = [], 0
        for shp, sz in zip(shapes, sizes):
            out.append(w[i:i + sz].reshape(shp))
            i += sz
        return out

    def loss(w):
        w1, b1, w2, b2 = unpack(w)
        h = np.tanh(Z @ w1 + b1)
        o = 1.0 / (1.0 + np.exp(-(h @ w2 + b2)))
        e = o - Y
        val = (e * e).sum() / n + l2 * ((w1 ** 2).sum() + (w2 ** 2).sum())
        go = 2.0 * e / n * o * (1.0 - o)
        gh = go @ w2.T * (1.0 - h * h)
        grad = [Z.T @ gh + 2 * l2 * w1, gh.sum(axis=0), h.T @ go + 2 * l2 * w2, go.sum(axis=0)]
        return val, np.concatenate([g.ravel() for g in grad])

    w0 = np.concatenate([rng.standard_normal(d * hidden) / np.sqrt(d), np.zeros(hidden),
                         rng.standard_normal(hidden * k) / np.sqrt(hidden), np.zeros(k)])
    res = minimize(loss, w0, jac=True, method="L-BFGS-B", options={"maxiter": int(iterations)})
    w1, b1, w2, b2 = unpack(res.x)
    return AcousticModel(mean, scale, w1, b1, w2, b2)


def write_model(model: AcousticModel, path: str) -> None:
    """Write ``model`` as the Python module :mod:`._acoustic_model` (float32, base64)."""
    import base64
    import textwrap

    flat = np.concatenate([a.ravel() for a in model.to_arrays()]).astype("<f4")
    data = base64.b64encode(flat.tobytes()).decode("ascii")
    lines = textwrap.wrap(data, 96)
    with open(path, "w", encoding="utf-8") as f:
        f.write('"""Weights of the acoustic mouth-shape model (generated by '
                '``python -m echomimic.speech.acoustic``; do not edit)."""\n\n')
        f.write(f"HIDDEN = {model.w1.shape[1]}\n\n")
        f.write("DATA = (\n")
        for ln in lines:
            f.write(f'    "{ln}"\n')
        f.write(")\n")


# ---------------------------------------------------------------------------------------------
# Fitting against espeak-ng's own phoneme timing
# ---------------------------------------------------------------------------------------------

#: Extra training sentences per espeak-ng voice (besides the evaluation set's tune sentences).
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
_CAL_LANG = {"en-us": "en", "cmn": "zh", "es": "es", "de": "de", "ja": "ja"}


def training_items(split: str = "tune") -> list:
    """Evaluation-set items of ``split``; for ``"tune"`` also the calibration sentences and
    every tune item again in each of the four conditions (clean, noise, reverb, both)."""
    import dataclasses

    from ..quality.evalset import TUNE, EvalItem, build_items

    items = build_items(split)
    if split != "tune":
        return items
    for base, texts in CALIBRATION_TEXT.items():
        for i in range(0, len(texts) - 1, 2):
            for s in TUNE:
                voice = base + (f"+{s.variant}" if s.variant else "")
                items.append(EvalItem(_CAL_LANG[base], voice, s, (texts[i], texts[i + 1]), "tune",
                                      name=f"cal-{base}-{i}-{s.condition}-{s.rate}"))
    extra = []
    for it in items:
        for cond in ("clean", "noise", "reverb", "noise+reverb"):
            if cond != it.setting.condition:
                extra.append(dataclasses.replace(
                    it, setting=dataclasses.replace(it.setting, condition=cond),
                    name=f"{it.name}-aug-{cond}"))
    return items + extra


def training_data(items: list) -> list[tuple[str, np.ndarray, dict, np.ndarray]]:
    """(language, design matrix, truth curves, speech mask) per item."""
    from ..quality.evalset import make_item_audio
    from .analyze import measure
    from .features import prepare
    from .phonetics import truth_curves

    out = []
    for it in items:
        audio, phones = make_item_audio(it)
        fr = measure(prepare(audio))
        truth = truth_curves(phones, fr.n * 0.01, 0.01)
        out.append((it.lang, fr.design, {k: v[: fr.n] for k, v in truth.items()},
                    fr.activity >= 0.5))
    return out


def _main() -> None:  # pragma: no cover - maintenance tool
    """Refit the model on the tune split, print held-out correlations and write the weights."""
    import os

    train = training_data(training_items("tune"))
    held = training_data(training_items("heldout"))
    model = fit_model([t[1] for t in train], [t[2] for t in train], [t[3] for t in train])
    for name, items in (("tune", train), ("held-out", held)):
        per: dict[str, list] = {}
        for lang, X, truth, mask in items:
            art = predict_articulation(X, model)
            per.setdefault(lang, []).append((art["open"][mask], truth["open"][mask]))
        for lang, rows in per.items():
            a = np.concatenate([r[0] for r in rows])
            t = np.concatenate([r[1] for r in rows])
            print(f"{name:9s} {lang:3s} r(open, truth) = {np.corrcoef(a, t)[0, 1]:.3f}")
    write_model(model, os.path.join(os.path.dirname(__file__), "_acoustic_model.py"))


if __name__ == "__main__":  # pragma: no cover
    _main()
