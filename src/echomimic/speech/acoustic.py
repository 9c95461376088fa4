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
reverberation; the *held-out* settings are only used to report. This stage only loads the
weights (``echomimic/data/acoustic_model.npz``); the fitting is a maintenance tool,
``python -m echomimic.quality.acoustic_fit``, which writes that file (deterministic: fixed
initialisation, L-BFGS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from ..types import ARTICULATION_KEYS
from .features import Spectral

__all__ = ["acoustic_features", "context_features", "predict_articulation", "FEATURE_NAMES",
           "CONTEXT_OFFSETS", "AcousticModel", "MODEL_PATH", "load_model", "read_model",
           "write_model"]

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


#: The shipped model's file (NPZ, arrays ``mean``, ``scale``, ``w1``, ``b1``, ``w2``, ``b2``).
MODEL_PATH = Path(__file__).resolve().parent.parent / "data" / "acoustic_model.npz"
_ARRAYS = ("mean", "scale", "w1", "b1", "w2", "b2")


def read_model(path: str | os.PathLike) -> AcousticModel:
    """An :class:`AcousticModel` from an NPZ file (no pickles), checked against the features."""
    n_in = (len(FEATURE_NAMES) - 1) * len(CONTEXT_OFFSETS)
    with np.load(path, allow_pickle=False) as data:
        arrays = [np.asarray(data[k], np.float64) for k in _ARRAYS]
    model = AcousticModel(*arrays)
    if model.w1.shape[0] != n_in or model.w2.shape[1] != len(ARTICULATION_KEYS):
        raise ValueError(f"{path}: model of {model.w1.shape[0]} inputs and {model.w2.shape[1]} "
                         f"outputs, expected {n_in} and {len(ARTICULATION_KEYS)}")
    return model


def write_model(model: AcousticModel, path: str | os.PathLike) -> None:
    """Write ``model`` as the NPZ file :func:`read_model` reads (float32)."""
    np.savez(path, **{k: np.asarray(a, "<f4") for k, a in zip(_ARRAYS, model.to_arrays())})


@lru_cache(maxsize=1)
def load_model() -> AcousticModel:
    """The shipped model (:data:`MODEL_PATH`)."""
    return read_model(MODEL_PATH)


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
