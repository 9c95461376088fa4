"""Frame-level acoustic features on a fixed hop: loudness, pitch and spectral shape.

All functions work on mono float32 audio at 16 kHz (see :func:`prepare`) and return one value
(or row) per hop, frame ``i`` being centred at ``(i + 0.5) * hop`` seconds, like
:meth:`echomimic.types.Speech.times`. Everything is vectorized numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

from ..errors import AudioError
from ..types import Audio

__all__ = [
    "ANALYSIS_RATE", "prepare", "frames", "n_hops", "frame_db", "loudness_envelope",
    "pitch_yin", "Spectral", "spectral_features", "lpc_formants",
]

#: Rate at which the speech stage analyses audio.
ANALYSIS_RATE = 16000
_EPS = 1e-10


def prepare(audio: Audio) -> np.ndarray:
    """Mono float32 samples at :data:`ANALYSIS_RATE` (resampled with ``resample_poly`` if needed)."""
    x = np.asarray(audio.samples, dtype=np.float32)
    if x.ndim == 2:  # tolerate (n, channels) input
        x = x.mean(axis=1) if x.shape[1] <= 8 else x.mean(axis=0)
    if x.ndim != 1:
        raise AudioError(f"audio must be mono samples, got shape {x.shape}")
    if audio.sample_rate <= 0:
        raise AudioError(f"invalid sample rate {audio.sample_rate}")
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    sr = int(audio.sample_rate)
    if sr != ANALYSIS_RATE:
        g = np.gcd(sr, ANALYSIS_RATE)
        x = resample_poly(x, ANALYSIS_RATE // g, sr // g).astype(np.float32)
    return x


#: hops processed at once by the per-hop feature extractors (bounds their memory)
_BLOCK = 2048


def n_hops(n_samples: int, hop_samples: int) -> int:
    """Number of hops covering ``n_samples`` (the last partial hop counts)."""
    return int(np.ceil(n_samples / float(hop_samples))) if n_samples > 0 else 0


def frames(x: np.ndarray, hop_samples: int, win: int, n: int | None = None,
           start: int = 0) -> np.ndarray:
    """(n, win) view of windows centred on each hop centre ``(i + 0.5) * hop``, zero-padded.

    With ``start``, the rows are hops ``start .. start + n - 1`` (only the samples they need
    are copied, so a block of hops of a long clip costs what the block needs)."""
    if n is None:
        n = n_hops(len(x), hop_samples) - start
    if start:
        off = hop_samples // 2 - win // 2
        a = start * hop_samples + off                 # first sample used (may be < 0)
        b = (start + n - 1) * hop_samples + off + win if n > 0 else a
        seg = np.zeros(max(0, b - a), np.float32)
        lo, hi = max(a, 0), min(b, len(x))
        if hi > lo:
            seg[lo - a:hi - a] = x[lo:hi]
        if n <= 0:
            return np.zeros((0, win), np.float32)
        view = np.lib.stride_tricks.sliding_window_view(seg, win)
        return view[:(n - 1) * hop_samples + 1:hop_samples][:n]
    off = hop_samples // 2 - win // 2            # start of frame 0 relative to sample 0
    need = (n - 1) * hop_samples + off + win     # one past the last sample used
    left = max(0, -off)
    right = max(0, need - len(x))
    xp = np.pad(x, (left, right))
    view = np.lib.stride_tricks.sliding_window_view(xp, win)
    start = off + left
    return view[start:start + (n - 1) * hop_samples + 1:hop_samples][:n]


def frame_db(x: np.ndarray, hop_samples: int, win: int | None = None) -> np.ndarray:
    """RMS level of each hop in dBFS (-120 for digital silence)."""
    win = win or 2 * hop_samples
    f = frames(x, hop_samples, win)
    out = np.empty(f.shape[0], np.float32)
    for i0 in range(0, f.shape[0], 8 * _BLOCK):        # bounded memory for long audio
        blk = f[i0:i0 + 8 * _BLOCK]
        rms = np.sqrt(np.mean(np.square(blk, dtype=np.float64), axis=1))
        out[i0:i0 + blk.shape[0]] = 20.0 * np.log10(np.maximum(rms, 1e-6))
    return out


def loudness_envelope(db: np.ndarray, active: np.ndarray | None = None,
                      floor_db: float | None = None) -> np.ndarray:
    """Normalize a dB track to [0, 1]: 0 at the noise floor, 1 at the 95th percentile of speech.

    ``active`` (bool per hop) selects the frames that define the top of the range; the floor is
    ``floor_db`` when given, else the 10th percentile of all frames, and never less than 45 dB
    below the top.
    """
    db = np.asarray(db, np.float64)
    if db.size == 0:
        return np.zeros(0, np.float32)
    ref = db[active] if active is not None and np.any(active) else db
    top = float(np.percentile(ref, 95))
    lo = float(np.percentile(db, 10)) if floor_db is None else float(floor_db)
    lo = max(lo, top - 45.0)
    if top - lo < 6.0:          # nothing but a flat level: no envelope to speak of
        lo = top - 6.0
    env = np.clip((db - lo) / (top - lo), 0.0, 1.0)
    return env.astype(np.float32)


def pitch_yin(x: np.ndarray, hop_samples: int, *, sr: int = ANALYSIS_RATE,
              fmin: float = 60.0, fmax: float = 450.0, threshold: float = 0.2,
              mask: np.ndarray | None = None, start: int = 0,
              stop: int | None = None) -> np.ndarray:
    """Fundamental frequency per hop (Hz, 0 where unvoiced) with a vectorized YIN.

    The difference function is computed from an FFT autocorrelation of each 40 ms window;
    ``mask`` (bool per hop of the whole clip) limits the work to the frames that may be voiced.
    ``start``/``stop`` compute hops ``start:stop`` only (each hop needs only its own window, so
    a block gives the same values as the whole clip).
    """
    stop = n_hops(len(x), hop_samples) if stop is None else stop
    n = max(0, stop - start)
    out = np.zeros(n, np.float32)
    if n == 0:
        return out
    tmax = int(np.ceil(sr / fmin))
    tmin = max(2, int(sr / fmax))
    win = 2 * tmax
    f = frames(x, hop_samples, win, n, start=start)
    idx_all = np.arange(n) if mask is None else np.flatnonzero(mask[start:stop])
    # blocks of hops keep the memory flat for long audio (the work is per hop)
    for b0 in range(0, idx_all.size, _BLOCK):
        idx = idx_all[b0:b0 + _BLOCK]
        out[idx] = _yin_block(f[idx], sr, tmin, tmax, win, threshold)
    return out


def _yin_block(f: np.ndarray, sr: int, tmin: int, tmax: int, win: int,
               threshold: float) -> np.ndarray:
    fr = f.astype(np.float64)
    fr = fr - fr.mean(axis=1, keepdims=True)
    w = tmax                                        # integration window
    nfft = 1 << int(np.ceil(np.log2(win + tmax)))
    spec_full = np.fft.rfft(fr, nfft)
    spec_head = np.fft.rfft(fr[:, :w], nfft)
    # r(tau) = sum_{j<w} x[j] x[j+tau]
    r = np.fft.irfft(np.conj(spec_head) * spec_full, nfft)[:, :tmax + 1]
    sq = np.concatenate([np.zeros((fr.shape[0], 1)), np.cumsum(fr * fr, axis=1)], axis=1)
    taus = np.arange(tmax + 1)
    e0 = sq[:, w:w + 1] - sq[:, 0:1]
    et = sq[:, taus + w] - sq[:, taus]
    d = np.maximum(e0 + et - 2.0 * r, 0.0)
    d[:, 0] = 0.0
    cums = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cums, _EPS)
    seg = cmnd[:, tmin:tmax]
    below = seg < threshold
    has = below.any(axis=1)
    first = np.argmax(below, axis=1)
    # descend to the local minimum after the first crossing
    rows = np.arange(seg.shape[0])
    t = first.copy()
    for _ in range(seg.shape[1]):
        nxt = np.minimum(t + 1, seg.shape[1] - 1)
        step = has & (seg[rows, nxt] < seg[rows, t]) & (nxt != t)
        if not step.any():
            break
        t = np.where(step, nxt, t)
    tau = t + tmin
    # parabolic interpolation
    a = cmnd[rows, np.clip(tau - 1, 1, tmax)]
    b = cmnd[rows, tau]
    c = cmnd[rows, np.clip(tau + 1, 1, tmax)]
    den = a - 2 * b + c
    shift = np.where(np.abs(den) > _EPS, 0.5 * (a - c) / np.where(den == 0, 1, den), 0.0)
    tau_f = np.clip(tau + np.clip(shift, -1, 1), tmin, tmax)
    f0 = np.where(has & (b < threshold), sr / np.maximum(tau_f, 1.0), 0.0)
    return f0.astype(np.float32)


@lru_cache(maxsize=8)
def _mel_filterbank(n_mels: int, nfft: int, sr: int, fmin: float = 60.0,
                    fmax: float | None = None) -> np.ndarray:
    fmax = fmax or sr / 2.0
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    imel = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    pts = imel(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    bins = np.fft.rfftfreq(nfft, 1.0 / sr)
    fb = np.zeros((n_mels, bins.size))
    for m in range(n_mels):
        lo, ce, hi = pts[m], pts[m + 1], pts[m + 2]
        up = (bins - lo) / max(ce - lo, 1e-6)
        down = (hi - bins) / max(hi - ce, 1e-6)
        fb[m] = np.maximum(0.0, np.minimum(up, down))
    return fb


def lpc_formants(fr: np.ndarray, sr: int = ANALYSIS_RATE, order: int = 12) -> np.ndarray:
    """First two formant frequencies (Hz) of each row of ``fr`` (windowed, pre-emphasized).

    Autocorrelation LPC (vectorized Levinson-Durbin), then the roots of each predictor as the
    eigenvalues of its companion matrix; formants are root angles above 200 Hz with a bandwidth
    under 500 Hz. Missing formants are NaN.
    """
    m = fr.shape[0]
    out = np.full((m, 2), np.nan)
    if m == 0:
        return out
    nfft = 1 << int(np.ceil(np.log2(2 * fr.shape[1])))
    r = np.fft.irfft(np.abs(np.fft.rfft(fr, nfft)) ** 2, nfft)[:, :order + 1]
    r[:, 0] *= 1.0 + 1e-6
    r[:, 0] += _EPS
    a = np.zeros((m, order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        acc = r[:, i] + np.sum(a[:, 1:i] * r[:, i - 1:0:-1], axis=1)
        k = -acc / err
        a_prev = a.copy()
        a[:, 1:i] = a_prev[:, 1:i] + k[:, None] * a_prev[:, i - 1:0:-1]
        a[:, i] = k
        err = err * (1.0 - k * k)
        err = np.maximum(err, _EPS)
    comp = np.zeros((m, order, order))
    comp[:, 0, :] = -a[:, 1:]
    comp[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    roots = np.linalg.eigvals(comp)
    ang = np.angle(roots)
    freq = ang * sr / (2 * np.pi)
    bw = -np.log(np.maximum(np.abs(roots), 1e-9)) * sr / np.pi
    ok = (ang > 0) & (freq > 200.0) & (freq < sr / 2 - 200.0) & (bw < 500.0)
    freq = np.where(ok, freq, np.inf)
    freq.sort(axis=1)
    for j in range(2):
        col = freq[:, j]
        out[:, j] = np.where(np.isfinite(col), col, np.nan)
    return out


@dataclass
class Spectral:
    """Spectral shape per hop (rows align with hops)."""

    logmel: np.ndarray      # (n, n_mels) log band energies, dB relative to the frame's total
    centroid: np.ndarray    # (n,) Hz
    tilt: np.ndarray        # (n,) dB, energy below 1 kHz minus energy 1-4 kHz
    high: np.ndarray        # (n,) dB, energy above 4 kHz minus total (frication)
    low: np.ndarray         # (n,) dB, energy below 400 Hz minus total (voice bar, nasal murmur)
    zcr: np.ndarray         # (n,) zero-crossing rate per sample
    f1: np.ndarray          # (n,) Hz, NaN when unknown
    f2: np.ndarray          # (n,) Hz, NaN when unknown


def spectral_features(x: np.ndarray, hop_samples: int, *, sr: int = ANALYSIS_RATE,
                      n_mels: int = 16, mask: np.ndarray | None = None, start: int = 0,
                      stop: int | None = None) -> Spectral:
    """Log-mel band shape, centroid, tilt, band balances, ZCR and LPC formants F1/F2 per hop.

    Formants are estimated only on hops where ``mask`` (bool per hop of the whole clip) is true
    (NaN elsewhere). ``start``/``stop`` compute hops ``start:stop`` only (same values as the
    whole clip's: each hop needs only its own window).
    """
    stop = n_hops(len(x), hop_samples) if stop is None else stop
    n = max(0, stop - start)
    if mask is not None and start:
        mask = mask[start:stop]
    win = 400 if sr == 16000 else int(0.025 * sr)
    nfft = 512 if sr == 16000 else 1 << int(np.ceil(np.log2(win)))
    f = frames(x, hop_samples, win, n, start=start)
    window = np.hanning(win)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    fb = _mel_filterbank(n_mels, nfft, sr)
    logmel = np.zeros((n, n_mels), np.float32)
    centroid, tilt, high, low, zcr = (np.zeros(n, np.float32) for _ in range(5))
    f1 = np.full(n, np.nan)
    f2 = np.full(n, np.nan)

    def band(spec, lo, hi):
        sel = (freqs >= lo) & (freqs < hi)
        return spec[:, sel].sum(axis=1) + _EPS

    # blocks of hops keep the memory flat for long audio (every feature is per hop)
    for i0 in range(0, n, _BLOCK):
        i1 = min(n, i0 + _BLOCK)
        fr = f[i0:i1].astype(np.float64)
        spec = np.abs(np.fft.rfft(fr * window, nfft)) ** 2
        total = spec.sum(axis=1) + _EPS
        mel = spec @ fb.T + _EPS
        logmel[i0:i1] = 10 * np.log10(mel) - 10 * np.log10(total)[:, None]
        centroid[i0:i1] = (spec @ freqs) / total
        tilt[i0:i1] = 10 * np.log10(band(spec, 0, 1000) / band(spec, 1000, 4000))
        high[i0:i1] = 10 * np.log10(band(spec, 4000, sr / 2 + 1) / total)
        low[i0:i1] = 10 * np.log10(band(spec, 0, 400) / total)
        sb = np.signbit(fr)
        zcr[i0:i1] = np.mean(sb[:, 1:] != sb[:, :-1], axis=1)
        idx = np.arange(i1 - i0) if mask is None else np.flatnonzero(mask[i0:i1])
        if idx.size:
            pre = fr[idx, 1:] - 0.97 * fr[idx, :-1]
            fm = lpc_formants(pre * np.hamming(win - 1), sr)
            f1[i0 + idx], f2[i0 + idx] = fm[:, 0], fm[:, 1]
    return Spectral(logmel=logmel.astype(np.float32), centroid=centroid.astype(np.float32),
                    tilt=tilt.astype(np.float32), high=high.astype(np.float32),
                    low=low.astype(np.float32), zcr=zcr.astype(np.float32), f1=f1, f2=f2)
