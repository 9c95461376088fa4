"""One phonetic table: phoneme labels -> mouth articulation targets.

Targets (each in [0, 1]): ``open`` jaw/lip opening, ``round`` lip rounding/protrusion,
``spread`` lip spreading, ``close`` bilabial closure, ``labiodental`` lower lip to upper teeth.

Two label sets are covered by the same vowel/consonant classes:

* ARPAbet, as produced by pocketsphinx's English phone recognizer (``AA`` ... ``ZH``, ``SIL``
  and filler words such as ``+NSN+``);
* espeak-ng phoneme mnemonics in every language (Kirshenbaum-style ASCII: ``a``, ``@``, ``3:``,
  ``aI``, ``tS``, ``t_s\\``, ``i.``, ``y``, ...). Stress and length marks are ignored; a vowel
  sequence (``aI``, ``iou``) is a diphthong whose target moves from its first to its last part.

Pauses (``_``, ``_:``, ``SIL``) are the rest shape: everything 0 except ``close`` = 1.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from ..types import ARTICULATION_KEYS, Phone

__all__ = ["articulation_for", "shape_sequence", "truth_curves", "is_pause", "detect_scheme",
           "ARPABET",
           "VOWELS", "CONSONANTS", "REST"]

Shape = tuple[float, float, float, float, float]   # open, round, spread, close, labiodental

REST: Shape = (0.0, 0.0, 0.0, 1.0, 0.0)
NEUTRAL: Shape = (0.2, 0.0, 0.0, 0.0, 0.0)


def _s(open_: float, round_: float = 0.0, spread: float = 0.0, close: float = 0.0,
       labio: float = 0.0) -> Shape:
    return (open_, round_, spread, close, labio)


#: Vowel qualities (Kirshenbaum / espeak symbols), by height, backness and rounding.
VOWELS: dict[str, Shape] = {
    "i": _s(0.22, 0.0, 0.80), "I": _s(0.32, 0.0, 0.55), "e": _s(0.42, 0.0, 0.60),
    "E": _s(0.58, 0.0, 0.40), "&": _s(0.80, 0.0, 0.40), "a": _s(0.95), "A": _s(1.0),
    "V": _s(0.62), "@": _s(0.42), "3": _s(0.45, 0.15, 0.0), "0": _s(0.80, 0.40),
    "O": _s(0.70, 0.55), "o": _s(0.50, 0.72), "U": _s(0.32, 0.62), "u": _s(0.20, 0.90),
    "y": _s(0.20, 0.85), "Y": _s(0.40, 0.70), "W": _s(0.55, 0.55), "8": _s(0.35, 0.50),
    "1": _s(0.28, 0.0, 0.30), "Q": _s(0.65, 0.0, 0.1), "M": _s(0.25, 0.0, 0.35),
    "7": _s(0.42, 0.0, 0.2), "6": _s(0.70),
}

#: Consonant classes (espeak symbols; ARPAbet consonants map onto these below).
CONSONANTS: dict[str, Shape] = {
    # bilabials
    "p": _s(0.0, close=1.0), "b": _s(0.0, close=1.0), "m": _s(0.0, close=1.0),
    "B": _s(0.05, close=0.6), "P": _s(0.05, close=0.6),
    # labiodentals
    "f": _s(0.08, labio=1.0), "v": _s(0.08, labio=1.0), "F": _s(0.05, close=0.3, labio=0.8),
    # labial glide / rounded approximants
    "w": _s(0.15, 0.90), "W": _s(0.15, 0.85),
    # postalveolar (lips protrude)
    "S": _s(0.15, 0.55), "Z": _s(0.15, 0.55), "tS": _s(0.12, 0.50), "dZ": _s(0.12, 0.50),
    # retroflex sibilants (Mandarin zh ch sh r)
    "s.": _s(0.15, 0.45), "z.": _s(0.2, 0.35), "ts.": _s(0.12, 0.45), "r.": _s(0.25, 0.35),
    # alveolo-palatal (Mandarin j q x, Japanese sh)
    "s\\": _s(0.12, 0.1, 0.45), "z\\": _s(0.12, 0.1, 0.45), "tS;": _s(0.12, 0.1, 0.45),
    "ts\\": _s(0.12, 0.1, 0.45), "t_s\\": _s(0.12, 0.1, 0.45), "C": _s(0.15, 0.0, 0.40),
    # alveolar sibilants
    "s": _s(0.10, 0.0, 0.35), "z": _s(0.10, 0.0, 0.35), "ts": _s(0.10, 0.0, 0.30),
    "dz": _s(0.10, 0.0, 0.30),
    # dentals / alveolars
    "T": _s(0.18), "D": _s(0.18), "t": _s(0.18), "d": _s(0.18), "n": _s(0.18),
    "l": _s(0.30), "L": _s(0.25), "4": _s(0.28), "r": _s(0.25, 0.30), "R": _s(0.30, 0.15),
    "r\\": _s(0.25, 0.25), "*": _s(0.28),
    # palatals
    "j": _s(0.18, 0.0, 0.50), "J": _s(0.18, 0.0, 0.30), "c": _s(0.18, 0.0, 0.3),
    "l^": _s(0.22, 0.0, 0.3), "n^": _s(0.18, 0.0, 0.3),
    # velars, uvulars, glottals
    "k": _s(0.28), "g": _s(0.28), "N": _s(0.28), "x": _s(0.30), "G": _s(0.30),
    "X": _s(0.35), "q": _s(0.30), "h": _s(0.40), "?": _s(0.20), "H": _s(0.40),
}

#: ARPAbet (CMU / pocketsphinx) -> espeak-style symbol(s); two symbols form a diphthong.
ARPABET: dict[str, str] = {
    "AA": "A", "AE": "&", "AH": "V", "AO": "O", "AW": "aU", "AY": "aI", "EH": "E", "ER": "3",
    "EY": "eI", "IH": "I", "IY": "i", "OW": "oU", "OY": "OI", "UH": "U", "UW": "u",
    "B": "b", "CH": "tS", "D": "d", "DH": "D", "F": "f", "G": "g", "HH": "h", "JH": "dZ",
    "K": "k", "L": "l", "M": "m", "N": "n", "NG": "N", "P": "p", "R": "r", "S": "s", "SH": "S",
    "T": "t", "TH": "T", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "Z",
}

_STRESS = re.compile(r"[',%=!]")
_MODIFIERS = re.compile(r"[:#~\-\[\]^`]|(?<=.)\d")


def is_pause(label: str) -> bool:
    """Whether a label is a pause / silence / filler rather than a speech sound."""
    lab = label.strip()
    return (not lab or lab.startswith("_") or lab.upper() in {"SIL", "SP", "SPN", "NSN"}
            or (lab.startswith("+") and lab.endswith("+")) or lab in {"<s>", "</s>", "<sil>"})


def _is_switch(label: str) -> bool:
    return label.startswith("(") and label.endswith(")")


def _parse(label: str) -> list[Shape]:
    """Shapes of one espeak mnemonic: one per vowel part, or one for a consonant."""
    lab = _STRESS.sub("", label)
    if lab in CONSONANTS:
        return [CONSONANTS[lab]]
    # aspiration / palatalization / length suffixes on consonants: th, kh, tS;h, t_h, p'
    core = re.sub(r"(_h|h|;|_w|_j|')$", "", lab) if len(lab) > 1 else lab
    if core in CONSONANTS:
        return [CONSONANTS[core]]
    core = re.sub(r"(_h|h)$", "", core)
    if core in CONSONANTS:
        return [CONSONANTS[core]]
    # vowels, possibly sequences (diphthongs / triphthongs); keep '.', drop modifiers
    parts: list[Shape] = []
    for ch in _MODIFIERS.sub("", lab):
        if ch in VOWELS:
            parts.append(VOWELS[ch])
        elif ch in "jw" and parts:  # glide inside a vowel sequence
            parts.append(VOWELS["i"] if ch == "j" else VOWELS["u"])
    if parts:
        # 'i.' / 'i[' are Mandarin apical vowels: less spread than i
        if lab.startswith(("i.", "i[")):
            return [_s(0.22, 0.0, 0.35)]
        return parts
    # fall back to the first known consonant character
    for ch in lab:
        if ch in CONSONANTS:
            return [CONSONANTS[ch]]
    return [NEUTRAL]


def _scheme_of(label: str) -> str:
    """``arpabet`` for multi-letter upper-case ARPAbet labels, else ``espeak``.

    Single capitals (``S``, ``T``, ``D``, ``N``, ``Z``, ``V`` ...) mean different sounds in the two
    sets; alone they are read as espeak symbols. Pass ``scheme`` to decide explicitly.
    """
    lab = label.strip().rstrip("012")
    return "arpabet" if len(lab) > 1 and lab.isupper() and lab in ARPABET else "espeak"


@lru_cache(maxsize=4096)
def shape_sequence(label: str, scheme: str = "auto") -> tuple[Shape, ...]:
    """Target shape(s) of a label: one, or several for a diphthong (first to last).

    ``scheme`` is ``"arpabet"``, ``"espeak"`` or ``"auto"`` (see :func:`_scheme_of`).
    """
    lab = label.strip()
    if is_pause(lab):
        return (REST,)
    if _is_switch(lab):
        return ()
    if scheme == "auto":
        scheme = _scheme_of(lab)
    if scheme == "arpabet":
        up = lab.upper().rstrip("012")
        if up in ARPABET:
            return tuple(sh for sym in _arpabet_parts(ARPABET[up]) for sh in _parse(sym))
        return (NEUTRAL,)
    return tuple(_parse(lab))


def detect_scheme(labels: list[str]) -> str:
    """``arpabet`` when every speech label is an upper-case ARPAbet phone, else ``espeak``."""
    speech = [lab.strip().rstrip("012") for lab in labels if not is_pause(lab)]
    if speech and all(lab in ARPABET for lab in speech) and any(len(lab) > 1 for lab in speech):
        return "arpabet"
    return "espeak"


def _arpabet_parts(sym: str) -> list[str]:
    if sym in CONSONANTS:
        return [sym]
    return list(sym)


def articulation_for(label: str, scheme: str = "auto") -> dict[str, float]:
    """Articulation targets of one phoneme label (ARPAbet or espeak-ng); diphthongs averaged.

    ``scheme``: ``"arpabet"``, ``"espeak"`` or ``"auto"`` (multi-letter capitals such as ``AA``
    or ``SH`` are ARPAbet; single capitals are espeak symbols). Language-switch markers such as
    ``(en)`` carry no sound and return the neutral shape.
    """
    seq = shape_sequence(label, scheme) or (NEUTRAL,)
    arr = np.mean(np.asarray(seq, np.float64), axis=0)
    return {k: float(v) for k, v in zip(ARTICULATION_KEYS, arr)}


def truth_curves(phones: list[Phone], duration: float, hop: float = 0.01, *,
                 transition: float = 0.03, scheme: str = "auto") -> dict[str, np.ndarray]:
    """Per-hop target curves implied by a phone list.

    Each phone holds its target over its span (a diphthong moves linearly from its first to its
    last part); consecutive targets are joined by linear ramps of ``transition`` seconds (a
    moving average of the step curve). Hops not covered by any phone are at rest.
    ``scheme`` names the label set for the whole list (``"auto"``: :func:`detect_scheme`).
    Returns ``{key: (n,) float32}`` for every key of :data:`ARTICULATION_KEYS`, with
    ``n = ceil(duration / hop)``.
    """
    if scheme == "auto":
        scheme = detect_scheme([ph.label for ph in phones])
    n = int(np.ceil(duration / hop - 1e-9)) if duration > 0 else 0
    t = (np.arange(n) + 0.5) * hop
    cur = np.tile(np.asarray(REST, np.float64), (n, 1))
    for ph in phones:
        seq = shape_sequence(ph.label, scheme)
        if not seq:
            continue
        i0 = int(np.searchsorted(t, ph.start, side="left"))
        i1 = int(np.searchsorted(t, ph.end, side="left"))
        if i1 <= i0:
            continue
        if len(seq) == 1:
            cur[i0:i1] = seq[0]
        else:
            pts = np.asarray(seq, np.float64)
            u = (t[i0:i1] - ph.start) / max(ph.end - ph.start, 1e-6) * (len(seq) - 1)
            for k in range(pts.shape[1]):
                cur[i0:i1, k] = np.interp(u, np.arange(len(seq)), pts[:, k])
    w = int(round(transition / hop))
    if w > 1 and n:
        from scipy.ndimage import uniform_filter1d

        cur = uniform_filter1d(cur, size=w, axis=0, mode="nearest")
    return {k: cur[:, j].astype(np.float32) for j, k in enumerate(ARTICULATION_KEYS)}
