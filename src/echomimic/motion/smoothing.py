"""Signal smoothing used by the motion generators and the mixer.

All functions take time along axis 0 and work on every column of a 2-D array at once.

* :func:`one_euro` – the One-Euro filter (Casiez, Roussel & Vogel, CHI 2012): a one-pole low-pass
  whose cutoff rises with the signal's speed, so slow motion is smoothed hard (no jitter) while
  fast motion keeps little lag. The usual choice for tracked landmarks and poses.
* :func:`gaussian_smooth` – zero-phase Gaussian smoothing (offline, no lag).
* :func:`attack_release` – a one-pole follower with separate rise and fall time constants, the
  building block of the mouth dynamics (mouths open and close at different speeds).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter

from echomimic.errors import InvalidOption

__all__ = ["one_euro", "gaussian_smooth", "attack_release"]


def _as_2d(x: np.ndarray) -> tuple[np.ndarray, bool]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        return arr[:, None], True
    if arr.ndim != 2:
        raise ValueError(f"expected a 1-D or 2-D array (time on axis 0), got shape {arr.shape}")
    return arr, False


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InvalidOption(f"{name} must be a positive number, got {value!r}")
    return value


def _alpha(cutoff: np.ndarray | float, fps: float) -> np.ndarray | float:
    """Smoothing factor of a one-pole low-pass with the given cutoff (Hz) at sample rate ``fps``."""
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau * fps)


def one_euro(x: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.0,
             d_cutoff: float = 1.0) -> np.ndarray:
    """Apply the One-Euro filter along axis 0.

    Args:
        x: samples, shape (n,) or (n, k); each column is filtered independently.
        fps: sample rate in Hz.
        min_cutoff: cutoff (Hz) when the signal is still; lower means smoother and more lag.
        beta: speed coefficient; the cutoff becomes ``min_cutoff + beta * |dx/dt|`` (units of
            ``x`` per second), so fast motion is followed closely. ``0`` gives a plain one-pole.
        d_cutoff: cutoff (Hz) of the low-pass applied to the derivative estimate.

    Returns:
        The filtered array, float64, same shape as ``x``. The first sample is passed through.
    """
    fps = _positive("fps", fps)
    min_cutoff = _positive("min_cutoff", min_cutoff)
    d_cutoff = _positive("d_cutoff", d_cutoff)
    beta = float(beta)
    if not math.isfinite(beta) or beta < 0:
        raise InvalidOption(f"beta must be a non-negative number, got {beta!r}")
    arr, was_1d = _as_2d(x)
    n = arr.shape[0]
    if n == 0:
        return arr[:, 0].copy() if was_1d else arr.copy()
    if beta == 0.0:
        # Constant cutoff: the filter is a linear one-pole, run by scipy in C.
        a = float(_alpha(min_cutoff, fps))
        out, _ = lfilter([a], [1.0, a - 1.0], arr, axis=0, zi=((1.0 - a) * arr[:1]))
    else:
        out = np.empty_like(arr)
        a_d = float(_alpha(d_cutoff, fps))
        x_hat = arr[0].copy()
        dx_hat = np.zeros_like(x_hat)
        out[0] = x_hat
        for i in range(1, n):
            dx = (arr[i] - x_hat) * fps
            dx_hat += a_d * (dx - dx_hat)
            a = _alpha(min_cutoff + beta * np.abs(dx_hat), fps)
            x_hat = x_hat + a * (arr[i] - x_hat)
            out[i] = x_hat
    return out[:, 0] if was_1d else out


def gaussian_smooth(x: np.ndarray, sigma: float, *, fps: float | None = None) -> np.ndarray:
    """Zero-phase Gaussian smoothing along axis 0 (edges extended with the nearest value).

    Args:
        x: samples, shape (n,) or (n, k).
        sigma: standard deviation of the kernel, in samples, or in seconds when ``fps`` is given.
            ``0`` returns an unchanged copy.
        fps: sample rate in Hz, when ``sigma`` is in seconds.

    Returns:
        The smoothed array, float64, same shape as ``x``.
    """
    arr = np.asarray(x, dtype=np.float64)
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise InvalidOption(f"sigma must be a non-negative number, got {sigma!r}")
    if fps is not None:
        sigma *= _positive("fps", fps)
    if sigma == 0 or arr.shape[0] == 0:
        return arr.copy()
    return gaussian_filter1d(arr, sigma, axis=0, mode="nearest")


def attack_release(x: np.ndarray, fps: float, attack: float, release: float,
                   initial: float | np.ndarray | None = None) -> np.ndarray:
    """One-pole follower with a rise time constant ``attack`` and a fall one ``release`` (seconds).

    ``y[i] = y[i-1] + a * (x[i] - y[i-1])`` where ``a`` uses ``attack`` when ``x[i] > y[i-1]`` and
    ``release`` otherwise; run forward in time. ``initial`` is the state before the first sample
    (defaults to the first sample). Works on (n,) or (n, k) arrays; returns float64.
    """
    fps = _positive("fps", fps)
    arr, was_1d = _as_2d(x)
    n, k = arr.shape
    a_up = 1.0 - math.exp(-1.0 / (max(float(attack), 1e-9) * fps))
    a_dn = 1.0 - math.exp(-1.0 / (max(float(release), 1e-9) * fps))
    out = np.empty_like(arr)
    if n == 0:
        return out[:, 0] if was_1d else out
    init = arr[0] if initial is None else np.broadcast_to(np.asarray(initial, np.float64), (k,))
    # A plain Python loop over floats per column is several times faster than numpy per sample
    # for the few columns used here.
    for c in range(k):
        col = arr[:, c].tolist()
        y = float(init[c])
        res = [0.0] * n
        for i, v in enumerate(col):
            y += (a_up if v > y else a_dn) * (v - y)
            res[i] = y
        out[:, c] = res
    return out[:, 0] if was_1d else out
