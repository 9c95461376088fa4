"""An invisible watermark in the frames: DWT-DCT with quantization index modulation.

The scheme follows the ``dwtDct`` method of the ``invisible-watermark`` package (one level of a
Haar wavelet transform, then a DCT of 4x4 blocks of its low band, bits carried by quantizing
coefficients), written here on NumPy and OpenCV so that it needs neither that package's torch
requirement nor a second OpenCV. Two changes make it survive what happens to a video on its
way: the transform works on the picture resized to a fixed square (256, 128 or 64 pixels a side,
chosen from the frame's size), so a copy scaled down to half size still lines up with it; and
every payload bit is spread over many coefficients of every frame and read back with soft
decisions summed over the coefficients and over frames.

* **Embedding** (:class:`Watermarker`): the luma of the frame is resized (area average) to the
  working square, its Haar low band is cut in 4x4 blocks, and three low AC coefficients of each
  block are moved to the nearest point of a dithered lattice that encodes their bit (QIM, step
  :data:`STEP`). The change is taken back to the frame's size (bilinear) and added equally to
  R, G and B, which changes the luma only. About one grey level on average; the background of
  a still photo gets the same pattern in every frame, so nothing flickers.
* **Payload** (:func:`payload_bits`): 48 bits, a 24-bit mark that names the generator
  (``echomimic``), a 16-bit hash of a job id (0 when none is given) and a CRC-8 of both.
* **Reading** (:func:`detect`): the same transform on each frame; each coefficient gives a soft
  value ``cos(2 pi u)`` (+1 on the lattice of a 0 bit, -1 on that of a 1 bit) and the values are
  averaged over frames. The detection score is a z-score of the generator's mark,
  ``z = sum(e_i a_i) / sqrt(sum(a_i^2))``, which follows a standard normal law on anything that
  does not carry the mark (the key's lattice offsets are paired so that flat areas cancel
  exactly); a mark is reported from ``z >= 6`` on (a false alarm about once in a billion).

Everything is deterministic: the same frame gives the same watermarked frame.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import cv2
import numpy as np

__all__ = ["Watermarker", "WatermarkReading", "detect", "payload_bits", "id_hash",
           "job_scope", "current_job_id", "SCALES", "STEP", "THRESHOLD", "MAGIC"]

#: Sides of the working squares, largest first; a frame uses the largest that a quarter of its
#: size still holds (so that the pattern is coarse enough for a copy scaled to half size and
#: compressed again).
SCALES: tuple[int, ...] = (256, 128, 64)
#: Quantization step of the coefficients (in units of the 4x4 DCT of the Haar low band).
STEP = 22.0
#: z-score from which a mark is reported.
THRESHOLD = 6.0
#: The generator's mark (24 bits).
MAGIC = 0xEC0A1D
N_BITS = 48
_MAGIC_BITS = 24
#: 4x4 DCT coefficients used in each block (low AC: robust to compression and scaling).
_POSITIONS = ((0, 1), (1, 0), (1, 1))
#: Gain that makes up for the bilinear upsampling of the change, measured on the round trip.
_GAIN = 1.25
_KEY = b"echomimic-watermark/1"
#: Bits carried by successive coefficients: the generator's mark twice as often as the rest,
#: since it is what detection rests on.
_SLOTS = np.concatenate([np.arange(_MAGIC_BITS), np.arange(_MAGIC_BITS),
                         np.arange(_MAGIC_BITS, 48)])


def _dct_matrix(n: int = 4) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float64)


_T = _dct_matrix(4)
#: (16, len(_POSITIONS)): a flattened 4x4 block times this gives its DCT coefficients at
#: _POSITIONS (the DCT is orthonormal, so the transpose maps them back to the block).
_DCT_AT = np.stack([np.outer(_T[i], _T[j]).ravel() for i, j in _POSITIONS], 1)


def id_hash(job_id: str | None) -> int:
    """The 16-bit hash of a job id carried by the watermark (0 without one)."""
    if not job_id:
        return 0
    return int.from_bytes(hashlib.sha256(str(job_id).encode("utf-8")).digest()[:2], "big")


_JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("echomimic_job_id",
                                                                   default=None)


@contextlib.contextmanager
def job_scope(job_id: str | None) -> Iterator[None]:
    """Within the block, videos made by this thread carry ``job_id``'s hash in their watermark
    (the REST workers wrap each job in it)."""
    token = _JOB_ID.set(job_id)
    try:
        yield
    finally:
        _JOB_ID.reset(token)


def current_job_id() -> str | None:
    """The job id of the enclosing :func:`job_scope`, if any."""
    return _JOB_ID.get()


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def payload_bits(job_id: str | None = None) -> np.ndarray:
    """The 48 payload bits (0/1): the generator's mark, the job id's hash, a CRC-8."""
    body = MAGIC.to_bytes(3, "big") + id_hash(job_id).to_bytes(2, "big")
    data = body + bytes([_crc8(body)])
    return np.unpackbits(np.frombuffer(data, np.uint8))


@dataclass(frozen=True)
class _Key:
    """Per working square: the coefficients' lattice offsets and which bit each carries."""

    side: int
    dither: np.ndarray       # (n,) offsets in [0, 1)
    bit_of: np.ndarray       # (n,) payload bit index of each coefficient


_KEYS: dict[int, _Key] = {}


def _key(side: int) -> _Key:
    key = _KEYS.get(side)
    if key is None:
        n_blocks = (side // 8) ** 2
        n = n_blocks * len(_POSITIONS)
        seed = int.from_bytes(hashlib.sha256(_KEY + str(side).encode()).digest()[:8], "big")
        rng = np.random.default_rng(seed)
        half = n // 2
        d = rng.random(half)
        bits = _SLOTS[np.arange(half) % len(_SLOTS)]
        rng.shuffle(bits)
        order = rng.permutation(n)             # pairs (i, i + half) spread over the picture
        dither = np.empty(n)
        bit_of = np.empty(n, np.int64)
        dither[order[:half]], dither[order[half:2 * half]] = d, (d + 0.5) % 1.0
        bit_of[order[:half]], bit_of[order[half:2 * half]] = bits, bits
        if n % 2:                               # (never for the sides in SCALES)
            dither[order[-1]], bit_of[order[-1]] = 0.0, 0
        key = _Key(side, dither, bit_of)
        _KEYS[side] = key
    return key


def scale_for(height: int, width: int) -> int:
    """The working square of a frame: the largest side that half the frame still holds."""
    short = min(int(height), int(width))
    for side in SCALES:
        if 4 * side <= short:
            return side
    return SCALES[-1]


def _luma(frame: np.ndarray, side: int = 0) -> np.ndarray:
    """The frame's grey levels; halved in size (an exact 2x2 average, which the area average of
    :func:`_box_means` absorbs) while it stays at least four times the working square."""
    img = np.asarray(frame)
    while side and min(img.shape[:2]) >= 4 * side and not (img.shape[0] % 2 or img.shape[1] % 2):
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if img.ndim == 2:
        return img
    return cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)


def _box_means(luma: np.ndarray, side: int) -> np.ndarray:
    """``luma`` averaged over a ``side`` x ``side`` grid of boxes (an area resize; boxes end on
    whole pixels), from an integral image: fast at any size ratio."""
    h, w = luma.shape[:2]
    ii = cv2.integral(luma, sdepth=cv2.CV_32S if luma.dtype == np.uint8 else cv2.CV_64F)
    ys = np.rint(np.linspace(0, h, side + 1)).astype(np.int64)
    xs = np.rint(np.linspace(0, w, side + 1)).astype(np.int64)
    c = ii[np.ix_(ys, xs)]
    sums = (c[1:, 1:] - c[:-1, 1:] - c[1:, :-1] + c[:-1, :-1]).astype(np.float64)
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return sums / np.maximum(area, 1)


def _box_sums(luma: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sums of a uint8 picture over the boxes between the row edges ``ys`` and the column
    edges ``xs`` (exact integers)."""
    ii = cv2.integral(luma, sdepth=cv2.CV_32S)
    c = ii[np.ix_(ys, xs)]
    return (c[1:, 1:] - c[:-1, 1:] - c[1:, :-1] + c[:-1, :-1]).astype(np.int64)


def _coefficients(luma: np.ndarray, side: int) -> np.ndarray:
    """The watermark's coefficients of a luma picture, in key order: (n,)."""
    return _coefficients_of_means(_box_means(luma, side), side)


def _coefficients_of_means(c: np.ndarray, side: int) -> np.ndarray:
    """The coefficients from the box means ``c`` (side x side): the Haar low band, cut in 4x4
    blocks, and the :data:`_POSITIONS` coefficients of each block's DCT."""
    ll = (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2]) / 2.0
    nb = side // 8
    blocks = ll.reshape(nb, 4, nb, 4).transpose(0, 2, 1, 3).reshape(nb * nb, 16)
    return (blocks @ _DCT_AT).reshape(-1)


def _halve(img: np.ndarray, times: int) -> np.ndarray:
    """``img`` halved ``times`` times by exact 2x2 averages (as :func:`_luma` does)."""
    for _ in range(times):
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2),
                         interpolation=cv2.INTER_AREA)
    return img


def _halvings(height: int, width: int, side: int) -> int:
    """How many times :func:`_luma` halves a frame of this size."""
    k, h, w = 0, int(height), int(width)
    while min(h, w) >= 4 * side and not (h % 2 or w % 2):
        h, w, k = h // 2, w // 2, k + 1
    return k


#: Face-mesh landmarks around the eyes and the mouth (MediaPipe order): the watermark is kept
#: off them, where a viewer and a landmark tracker look closest.
_LEFT_EYE = (33, 133, 159, 145, 160, 144, 158, 153)
_RIGHT_EYE = (263, 362, 386, 374, 385, 380, 387, 373)
_MOUTH = (61, 291, 0, 17, 13, 14, 78, 308)


def protect_weights(height: int, width: int, landmarks: np.ndarray | None) -> np.ndarray | None:
    """A (height, width) float32 map, 0 over the eyes and the mouth of the face whose
    face-mesh ``landmarks`` (478 x 2 or 3, pixels) are given, rising smoothly to 1 around them
    (room for blinks, mouth opening and head motion). ``None`` without landmarks."""
    if landmarks is None:
        return None
    pts = np.asarray(landmarks, np.float64)
    if pts.ndim != 2 or pts.shape[0] < 468:
        return None
    eye = float(np.linalg.norm(pts[33, :2] - pts[263, :2])) or 1.0
    yy, xx = np.mgrid[0:int(height), 0:int(width)].astype(np.float32)
    weight = np.ones((int(height), int(width)), np.float32)
    for ids, (rx, ry), drop in ((_LEFT_EYE, (0.32, 0.26), 0.0), (_RIGHT_EYE, (0.32, 0.26), 0.0),
                                (_MOUTH, (0.45, 0.40), 0.12)):
        cx, cy = pts[list(ids), 0].mean(), pts[list(ids), 1].mean() + drop * eye
        r2 = ((xx - cx) / (rx * eye)) ** 2 + ((yy - cy) / (ry * eye)) ** 2
        weight = np.minimum(weight, np.clip(r2 - 1.0, 0.0, 1.0))   # 0 inside, 1 from r = 1.41
    return weight


class Watermarker:
    """Adds the invisible watermark to RGB frames of one size.

    ``Watermarker(height, width, job_id=None).apply(frame)`` returns a new frame (the input is
    not modified). With the face-mesh ``landmarks`` of the portrait, the eyes and the mouth are
    left untouched (see :func:`protect_weights`).

    Frames that differ from one still picture only inside a box (a portrait whose background
    does not move) are marked faster after :meth:`set_background`: :meth:`apply_region` then
    recomputes only the part of the transform that the box touches and returns the marked
    pixels of a region, the same as those of :meth:`apply`.
    """

    def __init__(self, height: int, width: int, *, job_id: str | None = None,
                 landmarks: np.ndarray | None = None):
        self.height, self.width = int(height), int(width)
        self.side = scale_for(self.height, self.width)
        self.key = _key(self.side)
        bits = payload_bits(job_id)
        self.target = bits[self.key.bit_of].astype(np.float64) / 2.0   # lattice offset 0 or 1/2
        self.job_id = job_id
        self.weights = protect_weights(self.height, self.width, landmarks)
        self._bg: dict | None = None

    def delta(self, frame: np.ndarray) -> np.ndarray:
        """The luma change for ``frame`` at the frame's size (float32)."""
        return self._delta_of(_coefficients(_luma(frame, self.side), self.side))

    def _delta_of(self, coefs: np.ndarray,
                  box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        side = self.side
        u = coefs / STEP - self.key.dither - self.target
        change = (np.round(u) - u) * STEP * _GAIN
        nb = side // 8
        # the inverse DCT of blocks that hold only the _POSITIONS coefficients
        dblocks = change.reshape(nb * nb, len(_POSITIONS)) @ _DCT_AT.T
        dll = dblocks.reshape(nb, nb, 4, 4).transpose(0, 2, 1, 3).reshape(side // 2, side // 2)
        # each value of the half-size band covers 2x2 boxes (an exact nearest-neighbour double)
        dc = cv2.resize((dll / 2.0).astype(np.float32), (side, side),
                        interpolation=cv2.INTER_NEAREST)
        d = cv2.resize(dc, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        weights = self.weights
        if box is not None:                  # only this part of the frame
            x0, y0, x1, y1 = box
            d = d[y0:y1, x0:x1]
            weights = None if weights is None else weights[y0:y1, x0:x1]
        if weights is not None:
            d = cv2.multiply(d, weights)
        return d

    @staticmethod
    def _add(frame: np.ndarray, d: np.ndarray) -> np.ndarray:
        """``frame`` + the change ``d`` rounded (half to even) on R, G and B, saturated."""
        up = cv2.convertScaleAbs(cv2.max(d, 0.0))       # rounded, saturated to 0..255
        down = cv2.convertScaleAbs(cv2.min(d, 0.0))
        up3 = cv2.cvtColor(up, cv2.COLOR_GRAY2RGB)
        down3 = cv2.cvtColor(down, cv2.COLOR_GRAY2RGB)
        return cv2.subtract(cv2.add(np.ascontiguousarray(frame), up3), down3)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` (H, W, 3) uint8 RGB with the watermark added (a new array)."""
        frame = np.asarray(frame)
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(f"expected a {self.width}x{self.height} frame, got "
                             f"{frame.shape[1]}x{frame.shape[0]}")
        return self._add(frame, self.delta(frame))

    __call__ = apply

    # ---- frames over a still background ------------------------------------------------------
    def set_background(self, still: np.ndarray,
                       moving: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Declare that the frames to come equal ``still`` outside the box ``moving``
        (x0, y0, x1, y1). Returns the box outside which every marked frame equals the marked
        ``still`` (the watermark's blocks that the moving box touches, and their blur)."""
        still = np.asarray(still)
        if still.shape[:2] != (self.height, self.width):
            raise ValueError("the background must have the frames' size")
        side, H, W = self.side, self.height, self.width
        k = _halvings(H, W, side)
        a = 1 << k
        x0, y0, x1, y1 = (int(v) for v in moving)
        x0, y0 = max(0, x0 // a * a), max(0, y0 // a * a)
        x1, y1 = min(W, -(-x1 // a) * a), min(H, -(-y1 // a) * a)
        luma = _luma(still, side)
        lh, lw = luma.shape[:2]
        ys = np.rint(np.linspace(0, lh, side + 1)).astype(np.int64)
        xs = np.rint(np.linspace(0, lw, side + 1)).astype(np.int64)
        sums = _box_sums(luma, ys, xs)
        # boxes the moving part of the luma touches, widened to whole 8x8-box blocks
        lx0, ly0, lx1, ly1 = x0 // a, y0 // a, x1 // a, y1 // a
        r0 = int(np.searchsorted(ys, ly0, "right")) - 1
        r1 = int(np.searchsorted(ys, ly1, "left"))
        c0 = int(np.searchsorted(xs, lx0, "right")) - 1
        c1 = int(np.searchsorted(xs, lx1, "left"))
        br0, bc0 = r0 // 8 * 8, c0 // 8 * 8
        br1, bc1 = min(side, -(-r1 // 8) * 8), min(side, -(-c1 // 8) * 8)

        def reach(n_out: int, lo: int, hi: int) -> tuple[int, int]:
            # output pixels of the bilinear upsampling (side -> n_out) that read rows [lo, hi)
            s = (np.arange(n_out) + 0.5) * (side / n_out) - 0.5
            f = np.floor(s).astype(np.int64)
            hit = np.flatnonzero((f + 1 >= lo) & (f <= hi - 1))
            return int(max(0, hit.min() - 1)), int(min(n_out, hit.max() + 2))

        dy0, dy1 = reach(H, br0, br1)
        dx0, dx1 = reach(W, bc0, bc1)
        dirty = (min(dx0, x0), min(dy0, y0), max(dx1, x1), max(dy1, y1))
        self._bg = {"k": k, "moving": (x0, y0, x1, y1), "luma": luma.copy(), "sums": sums,
                    "ys": ys, "xs": xs, "cells": (r0, r1, c0, c1),
                    "area": (np.diff(ys)[:, None] * np.diff(xs)[None, :]),
                    "dirty": dirty}
        return dirty

    def _means_over_background(self, frame: np.ndarray) -> np.ndarray:
        bg = self._bg
        assert bg is not None
        x0, y0, x1, y1 = bg["moving"]
        a = 1 << bg["k"]
        part = _halve(np.ascontiguousarray(frame[y0:y1, x0:x1]), bg["k"])
        luma = bg["luma"]
        luma[y0 // a:y1 // a, x0 // a:x1 // a] = cv2.cvtColor(part, cv2.COLOR_RGB2GRAY)
        r0, r1, c0, c1 = bg["cells"]
        ys, xs = bg["ys"][r0:r1 + 1], bg["xs"][c0:c1 + 1]
        sums = bg["sums"].copy()
        sums[r0:r1, c0:c1] = _box_sums(luma[ys[0]:ys[-1], xs[0]:xs[-1]], ys - ys[0], xs - xs[0])
        return sums.astype(np.float64) / np.maximum(bg["area"], 1)

    def apply_region(self, frame: np.ndarray,
                     box: tuple[int, int, int, int]) -> np.ndarray:
        """The pixels of ``apply(frame)`` in ``box`` (x0, y0, x1, y1), for a frame that equals
        the background of :meth:`set_background` outside its moving box (a new array)."""
        if self._bg is None:
            raise RuntimeError("set_background() first")
        frame = np.asarray(frame)
        box = tuple(int(v) for v in box)
        means = self._means_over_background(frame)
        d = self._delta_of(_coefficients_of_means(means, self.side), box)
        x0, y0, x1, y1 = box
        return self._add(frame[y0:y1, x0:x1], d)


@dataclass
class WatermarkReading:
    """What :func:`detect` read."""

    found: bool
    score: float                    # z-score of the generator's mark (normal(0, 1) without it)
    side: int = 0                   # working square it was read at
    frames: int = 0                 # frames read
    id_hash: str | None = None      # 4 hex digits of the job id's hash (when found and checked)
    id_checked: bool = False        # the CRC of the payload matched
    bit_agreement: float = 0.0      # share of the mark's bits read right
    scores: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"found": self.found, "score": round(self.score, 2), "side": self.side,
                "frames": self.frames, "id_hash": self.id_hash, "id_checked": self.id_checked,
                "bit_agreement": round(self.bit_agreement, 3),
                "scores": {str(k): round(v, 2) for k, v in self.scores.items()}}


def detect(frames: Iterable[np.ndarray], *, threshold: float = THRESHOLD) -> WatermarkReading:
    """Look for the watermark in frames (RGB or grey arrays of one size), at every working
    square a frame of this size can hold; the best one is reported."""
    sums: dict[int, np.ndarray] = {}
    count = 0
    for frame in frames:
        h, w = np.asarray(frame).shape[:2]
        for side in SCALES:
            if side > min(h, w):
                continue
            key = _key(side)
            u = _coefficients(_luma(frame, side), side) / STEP - key.dither
            s = np.cos(2 * np.pi * u)
            sums[side] = sums.get(side, 0.0) + s
        count += 1
    if not count or not sums:
        return WatermarkReading(False, 0.0, frames=count)
    expected = 1.0 - 2.0 * payload_bits(None)[:_MAGIC_BITS].astype(np.float64)   # +1 for 0
    best: WatermarkReading | None = None
    scores: dict[int, float] = {}
    for side, total in sums.items():
        key = _key(side)
        a = total / count
        sel = key.bit_of < _MAGIC_BITS
        e = expected[key.bit_of[sel]]
        norm = float(np.sqrt(np.sum(a[sel] ** 2))) or 1.0
        z = float(np.sum(e * a[sel]) / norm)
        scores[side] = z
        soft = np.bincount(key.bit_of, weights=a, minlength=N_BITS)
        bits = (soft < 0).astype(np.uint8)
        agree = float(np.mean(bits[:_MAGIC_BITS] == payload_bits(None)[:_MAGIC_BITS]))
        reading = WatermarkReading(z >= threshold, z, side, count, bit_agreement=agree)
        if reading.found:
            data = np.packbits(bits).tobytes()
            reading.id_checked = _crc8(data[:5]) == data[5]
            reading.id_hash = data[3:5].hex() if reading.id_checked else None
        if best is None or z > best.score:
            best = reading
    assert best is not None
    best.scores = scores
    return best
