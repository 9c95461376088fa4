"""Fit the acoustic mouth-shape model of :mod:`echomimic.speech.acoustic` (a maintenance tool).

The speech stage only loads its model file; this tool makes it. It renders the *tune* split of
the synthesized evaluation set (:mod:`echomimic.quality.evalset`: espeak-ng in English,
Mandarin, Japanese, Spanish and German, clean and with noise and reverberation) plus the
calibration sentences below, fits the network to the phoneme-derived target curves, prints the
correlations on the tune and held-out splits, and writes the weights::

    python -m echomimic.quality.acoustic_fit                 # rewrites echomimic/data/acoustic_model.npz
    python -m echomimic.quality.acoustic_fit other.npz       # somewhere else

Deterministic (fixed initialisation, L-BFGS); a few minutes on two cores.
"""

from __future__ import annotations

import os

import numpy as np

from ..speech.acoustic import (MODEL_PATH, AcousticModel, context_features,
                               predict_articulation, write_model)
from ..types import ARTICULATION_KEYS

__all__ = ["fit_model", "training_items", "training_data", "CALIBRATION_TEXT", "main"]


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

    from .evalset import TUNE, EvalItem, build_items

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
    from .evalset import make_item_audio
    from ..speech.analyze import measure
    from ..speech.features import prepare
    from ..speech.phonetics import truth_curves

    out = []
    for it in items:
        audio, phones = make_item_audio(it)
        fr = measure(prepare(audio))
        truth = truth_curves(phones, fr.n * 0.01, 0.01)
        out.append((it.lang, fr.design, {k: v[: fr.n] for k, v in truth.items()},
                    fr.activity >= 0.5))
    return out


def main(output: str | os.PathLike = MODEL_PATH) -> None:  # pragma: no cover - maintenance tool
    """Refit the model on the tune split, print held-out correlations and write the weights."""
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
    write_model(model, output)
    print(f"wrote {output}")


if __name__ == "__main__":  # pragma: no cover
    import sys

    main(*sys.argv[1:2])
