"""Transcript-guided lip-sync: align a transcript's phonemes to a recording of it.

When the words of a recording are known, the mouth need not be guessed from the sound. The
transcript is spoken with espeak-ng, which reports the exact time of every phoneme of its own
rendition; the synthetic and the real audio are then aligned in time by dynamic time warping
(DTW) of their MFCC features, as text-to-audio forced aligners based on synthesis do (e.g.
aeneas), and every phoneme boundary is carried through the warping path to the recording's time
line. The resulting :class:`~echomimic.types.Speech` takes its mouth-shape targets from those
phonemes (the phonetic table, :func:`echomimic.speech.phonetics.truth_curves`) and its activity,
loudness and pitch from the real audio; outside the recording's speech activity the mouth rests.

It works in every language espeak-ng speaks; no recognizer is involved.

Method:

1. The transcript's language is ``lang`` or, for ``"auto"``, detected from the text
   (:func:`echomimic.speech.textlang.detect_language`, more reliable than from audio).
2. It is synthesized at the default rate, then once more at a rate scaled so that its speech
   lasts about as long as the recording's (so the warp stays near the diagonal).
3. Features per 10 ms hop for both: 6 MFCCs (c1..c6 of 40 log-mel bands, 25 ms Hann windows;
   the low-order cepstrum is the spectral envelope, robust to another voice and to noise),
   their deltas, each normalized to zero mean and unit variance per file (which removes most of
   the voice difference), and the speech activity (weighted), so silence aligns with silence.
4. DTW with steps (1,0), (0,1), (1,1) on Euclidean costs; each row is solved in vectorized form
   (a running minimum), and long inputs are aligned coarse-to-fine in a band around the path
   found at a coarser hop (as FastDTW does), so memory stays proportional to the length.
   The reference is padded with 0.3 s of silence at both ends, so the recording's own leading
   and trailing silence align with silence.
5. A phoneme starting at synthetic hop ``j`` starts at the first real hop the path pairs with
   ``j``; it ends where the next one starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.fft import dct

from ..errors import AudioError, InvalidOption
from ..types import ARTICULATION_KEYS, Audio, Phone, Speech
from .features import ANALYSIS_RATE, frames, prepare

__all__ = ["align_transcript", "read_transcript", "dtw_path", "mfcc_features", "warp_phones",
           "MAX_TRANSCRIPT_CHARS"]

#: Longest transcript accepted (characters).
MAX_TRANSCRIPT_CHARS = 20000
#: Silence added before and after the reference synthesis (seconds).
_PAD_S = 0.3
#: Full DTW up to this many cells; above, coarse-to-fine in a band.
_FULL_CELLS = 4_000_000
#: Band radius around the projected coarse path, in coarse hops.
_RADIUS = 3
#: Weight of the speech-activity feature against the (unit-variance) MFCC dimensions.
_ACTIVITY_WEIGHT = 2.0
_N_MELS, _N_MFCC, _WIN, _NFFT = 40, 6, 400, 512


def read_transcript(transcript: str | os.PathLike) -> str:
    """The transcript text: the contents of a ``.txt`` file when ``transcript`` names an
    existing file (UTF-8, a BOM allowed), else the string itself, whitespace-normalized.

    Raises :class:`InvalidOption` when it is empty, unreadable or over
    :data:`MAX_TRANSCRIPT_CHARS` characters.
    """
    if isinstance(transcript, os.PathLike) or (
            isinstance(transcript, str) and len(transcript) < 4096 and "\n" not in transcript
            and (Path(transcript).is_file()
                 or (transcript.lower().endswith(".txt") and " " not in transcript.strip()))):
        path = Path(transcript)
        if not path.is_file():
            raise InvalidOption(f"transcript file {str(path)!r} does not exist")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidOption(f"cannot read the transcript file {str(path)!r}: {exc}") from None
    elif isinstance(transcript, str):
        text = transcript
    else:
        raise InvalidOption("transcript must be text or the path of a .txt file")
    text = " ".join(text.split())
    if not text:
        raise InvalidOption("the transcript is empty")
    if len(text) > MAX_TRANSCRIPT_CHARS:
        raise InvalidOption(f"the transcript has {len(text)} characters, over the limit of "
                            f"{MAX_TRANSCRIPT_CHARS}")
    return text


# ------------------------------------------------------------------------------------------------
# features
# ------------------------------------------------------------------------------------------------


def _mel_bank(sr: int = ANALYSIS_RATE, n_mels: int = _N_MELS, nfft: int = _NFFT,
              fmin: float = 80.0, fmax: float = 7600.0) -> np.ndarray:
    mel = 2595.0 * np.log10(1.0 + np.array([fmin, fmax]) / 700.0)
    pts = 700.0 * (10 ** (np.linspace(mel[0], mel[1], n_mels + 2) / 2595.0) - 1.0)
    bins = np.fft.rfftfreq(nfft, 1.0 / sr)
    lo, ce, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    return np.maximum(0.0, np.minimum((bins - lo) / (ce - lo), (hi - bins) / (hi - ce)))


def _standardize(a: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    ref = a[mask] if mask is not None and mask.sum() >= 10 else a
    mu = ref.mean(axis=0)
    sd = ref.std(axis=0)
    return (a - mu) / np.maximum(sd, 1e-6)


def mfcc_features(x: np.ndarray, hop_samples: int, activity: np.ndarray | None = None
                  ) -> np.ndarray:
    """Per-hop alignment features of 16 kHz audio: 6 MFCCs (c1..c6) and their deltas, normalized per
    file (statistics over the speech hops when ``activity`` is given), plus the weighted
    activity itself. Shape (n_hops, 13), float32; hop ``i`` is centred at ``(i + 0.5) * hop``."""
    n = int(np.ceil(len(x) / hop_samples)) if len(x) else 0
    bank = _mel_bank()
    win = np.hanning(_WIN).astype(np.float32)
    out = np.empty((n, _N_MFCC), np.float32)
    for s in range(0, n, 2048):
        e = min(n, s + 2048)
        f = frames(x, hop_samples, _WIN, n)[s:e] * win
        spec = np.abs(np.fft.rfft(f, _NFFT, axis=1)) ** 2
        logmel = np.log(spec @ bank.T + 1e-8)
        out[s:e] = dct(logmel, type=2, norm="ortho", axis=1)[:, 1:_N_MFCC + 1]
    mask = None if activity is None else np.asarray(activity[:n]) >= 0.5
    delta = np.gradient(out, axis=0) if n > 1 else np.zeros_like(out)
    feats = np.concatenate([_standardize(out, mask), _standardize(delta, mask)], axis=1)
    act = np.zeros((n, 1)) if activity is None else np.asarray(activity[:n], np.float64)[:, None]
    return np.concatenate([feats, _ACTIVITY_WEIGHT * act], axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# DTW
# ------------------------------------------------------------------------------------------------


def _dtw_band(X: np.ndarray, Y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """DTW of rows ``X`` against ``Y`` where row ``i`` may use columns ``lo[i]:hi[i]``.

    Steps (1,0), (0,1), (1,1), each adding the cost of the cell entered. Within a row,
    ``D[j] = min(A[j], D[j-1]) + c[j]`` with ``A`` from the previous row is solved at once:
    ``D[j] = S[j] + min_{k<=j}(A[k] - S[k-1])`` (S = running sum of the row's costs).
    Returns the path as (K, 2) int pairs (row, column) from (0, 0) to (N-1, M-1).
    """
    n = len(X)
    y2 = np.einsum("ij,ij->i", Y, Y).astype(np.float64)
    rows: list[np.ndarray] = []
    prev = None
    plo = phi = 0
    for i in range(n):
        a, b = int(lo[i]), int(hi[i])
        x = X[i].astype(np.float64)
        c = np.sqrt(np.maximum(y2[a:b] - 2.0 * (Y[a:b] @ x) + x @ x, 0.0))
        if prev is None:
            d = np.cumsum(c)
        else:
            A = np.full(b - a, np.inf)
            # from (i-1, j): previous row's column j
            s0, s1 = max(a, plo), min(b, phi)
            if s1 > s0:
                A[s0 - a:s1 - a] = prev[s0 - plo:s1 - plo]
            # from (i-1, j-1)
            s0, s1 = max(a, plo + 1), min(b, phi + 1)
            if s1 > s0:
                A[s0 - a:s1 - a] = np.minimum(A[s0 - a:s1 - a], prev[s0 - 1 - plo:s1 - 1 - plo])
            S = np.cumsum(c)
            Sm1 = np.concatenate([[0.0], S[:-1]])
            d = S + np.minimum.accumulate(A - Sm1)
        rows.append(d)
        prev, plo, phi = d, a, b
    # traceback
    path = []
    i, j = n - 1, int(hi[-1]) - 1
    while True:
        path.append((i, j))
        if i == 0 and j == 0:
            break
        best, step = np.inf, None
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            ii, jj = i - di, j - dj
            if ii < 0 or jj < 0 or not lo[ii] <= jj < hi[ii]:
                continue
            v = rows[ii][jj - lo[ii]]
            if v < best:
                best, step = v, (ii, jj)
        if step is None:      # cannot happen with a connected band; stop safely
            break
        i, j = step
    return np.asarray(path[::-1], np.int64)


def dtw_path(X: np.ndarray, Y: np.ndarray, *, max_cells: int = _FULL_CELLS,
             radius: int = _RADIUS) -> np.ndarray:
    """Minimum-cost monotone alignment of feature sequences ``X`` (N, d) and ``Y`` (M, d).

    Full DTW when ``N * M <= max_cells``; otherwise both are averaged over blocks of ``f`` hops,
    aligned recursively, and the fine alignment is searched in a band of ``radius`` coarse hops
    around the coarse path. Returns (K, 2) int64 index pairs from (0, 0) to (N-1, M-1).
    """
    X = np.asarray(X, np.float32)
    Y = np.asarray(Y, np.float32)
    n, m = len(X), len(Y)
    if n == 0 or m == 0:
        raise AudioError("nothing to align")
    if n * m <= max_cells or min(n, m) < 8 * radius:
        return _dtw_band(X, Y, np.zeros(n, np.int64), np.full(n, m, np.int64))
    f = int(np.ceil(np.sqrt(n * m / max_cells)))
    f = max(2, f)

    def pool(a: np.ndarray) -> np.ndarray:
        k = int(np.ceil(len(a) / f))
        pad = np.concatenate([a, np.repeat(a[-1:], k * f - len(a), axis=0)])
        return pad.reshape(k, f, -1).mean(axis=1)

    coarse = dtw_path(pool(X), pool(Y), max_cells=max_cells, radius=radius)
    lo = np.full(n, m, np.int64)
    hi = np.zeros(n, np.int64)
    for ci, cj in coarse:
        r0, r1 = ci * f, min(n, (ci + 1) * f)
        c0 = max(0, (cj - radius) * f)
        c1 = min(m, (cj + radius + 1) * f)
        lo[r0:r1] = np.minimum(lo[r0:r1], c0)
        hi[r0:r1] = np.maximum(hi[r0:r1], c1)
    # widen rows near the block edges too (a coarse cell spans f rows)
    for _ in range(radius):
        lo[1:] = np.minimum(lo[1:], lo[:-1])
        hi[:-1] = np.maximum(hi[:-1], hi[1:])
    lo[0], hi[-1] = 0, m
    lo = np.minimum.accumulate(lo[::-1])[::-1]       # monotone windows
    hi = np.maximum.accumulate(hi)
    return _dtw_band(X, Y, lo, hi)


def warp_phones(phones: list[Phone], path: np.ndarray, hop: float, duration: float
                ) -> list[Phone]:
    """Carry phones from the second sequence's time line (path column) to the first's (path
    row): a phone starting in column hop ``j`` starts at the first row hop paired with ``j``;
    it ends where the next phone starts (the last one at ``duration``)."""
    if not phones:
        return []
    m = int(path[:, 1].max()) + 1
    first = np.full(m, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, path[:, 1], path[:, 0])
    starts = []
    for ph in phones:
        j = int(np.clip(np.floor(ph.start / hop + 0.5), 0, m - 1))
        starts.append(first[j] * hop)
    starts = np.maximum.accumulate(np.clip(np.asarray(starts), 0.0, duration))
    out = []
    for k, ph in enumerate(phones):
        end = float(starts[k + 1]) if k + 1 < len(phones) else duration
        out.append(Phone(start=float(starts[k]), end=max(end, float(starts[k])), label=ph.label,
                         weight=ph.weight))
    return out


# ------------------------------------------------------------------------------------------------
# the entry point
# ------------------------------------------------------------------------------------------------


def _phone_activity(phones: list[Phone], n: int, hop: float) -> np.ndarray:
    from .phonetics import is_pause

    act = np.zeros(n, np.float32)
    t = (np.arange(n) + 0.5) * hop
    for ph in phones:
        if not is_pause(ph.label):
            act[(t >= ph.start) & (t < ph.end)] = 1.0
    return act


def align_transcript(audio: Audio, transcript: str | os.PathLike, *, lang: str = "auto",
                     voice: str | None = None, hop: float = 0.01) -> Speech:
    """A :class:`Speech` for a recording whose words are known.

    Args:
        audio: the recording (any rate; resampled to 16 kHz).
        transcript: what is said (text, or the path of a UTF-8 ``.txt`` file).
        lang: the transcript's language code, or ``"auto"`` to detect it from the text.
        voice: espeak-ng voice for the reference synthesis (default: from ``lang``).
        hop: analysis hop in seconds (5-40 ms).

    Returns:
        ``Speech`` with ``method="transcript"``, ``lang`` the language used, ``phones`` the
        transcript's phonemes on the recording's time line, activity/loudness/pitch measured on
        the recording, and ``meta["alignment"]`` (mean path cost, rate of the reference).

    Raises:
        InvalidOption: empty or unreadable transcript, unknown language.
        AudioError: empty audio, or no speech in the recording.
    """
    from .analyze import measure
    from .phonetics import REST, truth_curves
    from .textlang import resolve_lang
    from .tts import synthesize

    if not 0.005 <= float(hop) <= 0.04:
        raise InvalidOption(f"hop must be between 0.005 and 0.04 s, got {hop}")
    if audio is None or np.asarray(audio.samples).size == 0:
        raise AudioError("audio is empty")
    text = read_transcript(transcript)
    code = resolve_lang(text, lang) if not voice else (lang if lang not in ("", "auto") else "")
    x = prepare(audio)
    fr = measure(x, float(hop))
    hs = fr.hop_samples
    hop_s = hs / ANALYSIS_RATE
    real_active = fr.activity >= 0.5
    if not np.any(real_active):
        raise AudioError("the recording has no speech to align the transcript to")
    duration = len(x) / ANALYSIS_RATE

    # reference synthesis, with its speech about as long as the recording's
    rate = 175
    syn, phones = synthesize(text, lang=code or "auto", voice=voice, rate=rate)
    syn_speech = sum(p.end - p.start for p in phones if not p.label.startswith("_"))
    real_speech = float(real_active.sum()) * hop_s
    if syn_speech > 0:
        want = int(np.clip(round(rate * syn_speech / max(real_speech, 1e-3)), 80, 450))
        if abs(want - rate) > 0.15 * rate:
            rate = want
            syn, phones = synthesize(text, lang=code or "auto", voice=voice, rate=rate)
    # silence around the reference, so that the recording's leading and trailing silence have
    # something to pair with (otherwise the path may spread the first or last sound over them)
    y = prepare(syn)
    pad = int(round(_PAD_S * ANALYSIS_RATE / hs)) * hs
    y = np.concatenate([np.zeros(pad, np.float32), y, np.zeros(pad, np.float32)])
    phones = [Phone(p.start + pad / ANALYSIS_RATE, p.end + pad / ANALYSIS_RATE, p.label, p.weight)
              for p in phones]
    ny = int(np.ceil(len(y) / hs))
    y_act = _phone_activity(phones, ny, hop_s)

    fx = mfcc_features(x, hs, fr.activity)
    fy = mfcc_features(y, hs, y_act)
    path = dtw_path(fx, fy)
    cost = float(np.mean(np.linalg.norm(fx[path[:, 0]] - fy[path[:, 1]], axis=1)))
    warped = warp_phones(phones, path, hop_s, duration)

    n = fr.n
    art = truth_curves(warped, duration, hop_s, scheme="espeak")
    a = np.clip(fr.activity.astype(np.float64), 0.0, 1.0)
    a = np.where(a >= 0.5, 1.0, a)
    out = {}
    for k, rest in zip(ARTICULATION_KEYS, REST):
        v = np.asarray(art[k], np.float64)[:n]
        if len(v) < n:
            v = np.concatenate([v, np.full(n - len(v), rest)])
        out[k] = np.clip(a * v + (1.0 - a) * rest, 0.0, 1.0).astype(np.float32)
    return Speech(
        duration=duration, hop=hop_s, activity=fr.activity.astype(np.float32),
        loudness=fr.loudness.astype(np.float32), pitch=fr.pitch.astype(np.float32),
        articulation=out, phones=warped, lang=code or "auto", method="transcript",
        meta={"noise_floor_db": round(fr.info["noise_floor_db"], 2),
              "alignment": {"mean_cost": round(cost, 3), "reference_rate": rate,
                            "reference_voice": syn.source.removeprefix("tts:"),
                            "path_length": int(len(path))}},
    )
