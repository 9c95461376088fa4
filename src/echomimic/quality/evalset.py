"""A lip-sync evaluation set made offline, and the code that runs it.

Speech is synthesized with espeak-ng in English, Mandarin, Japanese (kana), Spanish and German,
with several voices, variants, rates and pitches, and degraded by noise and reverberation. The
phoneme timing espeak-ng reports is the ground truth: the phonetic table
(:mod:`echomimic.speech.phonetics`) turns it into a truth curve of mouth openness, the rounded
and spread vowels and the bilabials. The talking-portrait videos are made from the audio alone
(the speech path never sees the phonemes), then measured on their decoded frames with
:func:`echomimic.quality.evaluate_video`.

The set is split: :data:`TUNE` settings (voices, rates, pitches, conditions) and sentences are
the ones any tuning may look at; :data:`HELDOUT` settings and sentences are only reported.

    from echomimic.quality.evalset import build_items, run_items, summarize, format_summary
    rows = run_items(build_items("heldout"), paths=("acoustic", "recognizer", "auto"))
    print(format_summary(summarize(rows)))
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..types import Audio, Phone

__all__ = ["EvalItem", "LANGS", "SENTENCES", "TUNE", "HELDOUT", "PORTRAITS", "build_items",
           "make_item_audio", "run_item", "run_items", "summarize", "format_summary",
           "portrait_image", "add_noise", "add_reverb"]

#: Language code -> espeak-ng voice name(s). The second voice, when there is one, is held out.
LANGS: dict[str, tuple[str, ...]] = {
    "en": ("en-us", "en"),
    "zh": ("cmn",),
    "ja": ("ja",),
    "es": ("es", "es-419"),
    "de": ("de",),
}

#: Sentences per language: the first half is for tuning, the second half is held out.
SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "Bob bought a blue boat, and we sailed it on the lake.",
        "Please move the big box over to the window.",
        "I need three more pieces of cheese for the team.",
        "Who knew the moon could look so beautiful tonight?",
        "My father opened the map and pointed at the mountains.",
        "She keeps a small blue book of poems by her bed.",
        "We should eat some food before the movie begins.",
        "Maybe Paul will pay for the pizza with his own money.",
    ),
    "zh": (
        "我们明天去北京吃烤鸭。", "爸爸妈妈都不在家。", "这本书非常有意思。", "你喜欢喝茶还是咖啡？",
        "外面下雨了，别忘了带伞。", "我的朋友住在上海。", "谢谢你们的帮助。", "今天的天气比昨天好多了。",
    ),
    "ja": (
        "おはようございます。きょうはいいてんきですね。", "わたしはまいにちほんをよみます。",
        "このみせのすしはとてもおいしいです。", "あしたともだちとうみへいきます。",
        "みなさん、こんばんは。ようこそ。", "ふゆになるとやまにゆきがふります。",
        "ぼくのいぬはまるくてかわいいです。", "でんしゃはもうすぐえきにつきます。",
    ),
    "es": (
        "Buenos días, ¿puedo ayudarte con algo?", "Mi madre compró muchas manzanas verdes.",
        "El museo abre a las nueve de la mañana.", "Vamos a bailar en la playa esta noche.",
        "Pablo bebe un poco de agua fría.", "Los niños juegan con una pelota azul.",
        "¿Quieres comer pescado o pollo hoy?", "Mañana iremos al mercado muy temprano.",
    ),
    "de": (
        "Guten Morgen, wie geht es Ihnen heute?", "Meine Mutter backt einen großen Kuchen.",
        "Wir fahren am Montag mit dem Bus nach Bonn.", "Das Buch liegt unter dem blauen Tisch.",
        "Peter kauft Obst und Gemüse auf dem Markt.", "Im Winter ist es hier sehr kalt.",
        "Möchtest du noch eine Tasse Tee trinken?", "Unser Hund spielt gern im Garten.",
    ),
}


@dataclass(frozen=True)
class Setting:
    """How an utterance is spoken and degraded."""

    variant: str | None      # espeak voice variant ("m3", "f2", ...) or None
    rate: int                # words per minute
    pitch: int               # 0..99
    condition: str           # "clean", "noise", "reverb", "noise+reverb"
    voice_index: int = 0     # which voice of LANGS[lang]


#: Settings any tuning may look at.
TUNE: tuple[Setting, ...] = (
    Setting("m3", 150, 40, "clean"),
    Setting("f2", 190, 60, "noise"),
    Setting(None, 175, 50, "reverb"),
)
#: Settings that are only reported: other variants, rates and pitches, the second voice of a
#: language where espeak-ng has one.
HELDOUT: tuple[Setting, ...] = (
    Setting("m1", 165, 45, "clean", 1),
    Setting("f4", 215, 65, "noise+reverb"),
    Setting("m7", 135, 30, "noise", 1),
)

#: Portraits: the astronaut photo and transformations of it.
PORTRAITS: tuple[str, ...] = ("astronaut", "astronaut-gray", "astronaut-flip")

#: Silence around and between the two sentences of an item (seconds).
LEAD_IN, GAP, TAIL = 0.45, 0.7, 0.45
#: Noise level under the speech (signal-to-noise ratio, dB) and reverberation time (RT60, s).
SNR_DB, RT60 = 20.0, 0.35


@dataclass
class EvalItem:
    """One utterance of the set: two sentences with a pause between them."""

    lang: str
    voice: str
    setting: Setting
    texts: tuple[str, str]
    split: str
    portrait: str = "astronaut"
    name: str = ""
    meta: dict = field(default_factory=dict)


def _pairs(sents: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(sents[i], sents[i + 1]) for i in range(0, len(sents) - 1, 2)]


def build_items(split: str = "heldout", *, langs: Iterable[str] | None = None,
                max_per_setting: int | None = None) -> list[EvalItem]:
    """The items of a split (``"tune"`` or ``"heldout"``), deterministic and in a fixed order.

    Each language gets every setting of the split; each setting speaks the split's sentence
    pairs (``max_per_setting`` caps them). Portraits rotate through :data:`PORTRAITS`.
    """
    if split not in ("tune", "heldout"):
        raise ValueError(f"split must be 'tune' or 'heldout', got {split!r}")
    settings = TUNE if split == "tune" else HELDOUT
    items: list[EvalItem] = []
    k = 0
    for lang in (langs or LANGS):
        sents = SENTENCES[lang]
        half = len(sents) // 2
        pairs = _pairs(sents[:half] if split == "tune" else sents[half:])
        if max_per_setting is not None:
            pairs = pairs[:max_per_setting]
        for s in settings:
            voices = LANGS[lang]
            base = voices[min(s.voice_index, len(voices) - 1)]
            voice = base + (f"+{s.variant}" if s.variant else "")
            for j, texts in enumerate(pairs):
                items.append(EvalItem(lang=lang, voice=voice, setting=s, texts=texts, split=split,
                                      portrait=PORTRAITS[k % len(PORTRAITS)],
                                      name=f"{split}-{lang}-{voice}-{s.rate}-{s.condition}-{j}"))
                k += 1
    return items


# ---------------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------------


def _rng(name: str) -> np.random.Generator:
    import hashlib

    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(seed))


def add_noise(x: np.ndarray, sr: int, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add pink-ish noise (white noise through a one-pole low-pass) at ``snr_db`` below the
    speech level (RMS of the samples louder than -40 dB of the peak)."""
    from scipy.signal import lfilter

    w = rng.standard_normal(x.size)
    n = lfilter([1.0], [1.0, -0.9], w)
    n /= np.sqrt(np.mean(n * n)) + 1e-12
    loud = x[np.abs(x) > 0.01 * np.abs(x).max()] if x.size else x
    level = np.sqrt(np.mean(loud * loud)) if loud.size else 0.0
    return (x + n * level * 10 ** (-snr_db / 20)).astype(np.float32)


def add_reverb(x: np.ndarray, sr: int, rt60: float, rng: np.random.Generator,
               wet: float = 0.5) -> np.ndarray:
    """Convolve with an exponentially decaying noise impulse response (``rt60`` seconds)."""
    from scipy.signal import fftconvolve

    n = int(rt60 * sr)
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[: int(0.005 * sr)] = 0.0
    ir /= np.sqrt(np.sum(ir * ir)) + 1e-12
    y = fftconvolve(x, ir)[: x.size]
    out = (1 - wet) * x + wet * y * (np.sqrt(np.mean(x * x)) / (np.sqrt(np.mean(y * y)) + 1e-12))
    return out.astype(np.float32)


def make_item_audio(item: EvalItem) -> tuple[Audio, list[Phone]]:
    """The item's audio (espeak-ng, 22050 Hz, degraded as its setting says) and the phone
    timeline on the audio's time base (pauses between the sentences included)."""
    from ..speech import synthesize

    s = item.setting
    sr = None
    parts: list[np.ndarray] = []
    phones: list[Phone] = []
    t = 0.0
    for i, text in enumerate(item.texts):
        audio, ph = synthesize(text, voice=item.voice, rate=s.rate, pitch=s.pitch)
        sr = audio.sample_rate
        pad = LEAD_IN if i == 0 else GAP
        parts.append(np.zeros(int(round(pad * sr)), np.float32))
        t += len(parts[-1]) / sr
        phones += [Phone(p.start + t, p.end + t, p.label, p.weight) for p in ph]
        parts.append(np.asarray(audio.samples, np.float32))
        t += audio.duration
    parts.append(np.zeros(int(round(TAIL * sr)), np.float32))
    x = np.concatenate(parts)
    rng = _rng(item.name)
    if "reverb" in s.condition:
        x = add_reverb(x, sr, RT60, rng)
    if "noise" in s.condition:
        x = add_noise(x, sr, SNR_DB, rng)
    peak = float(np.abs(x).max()) or 1.0
    x = (x * min(1.0, 0.9 / peak)).astype(np.float32)
    return Audio(x, sr, source=item.name), phones


# ---------------------------------------------------------------------------------------------
# portraits
# ---------------------------------------------------------------------------------------------


def portrait_image(name: str) -> np.ndarray:
    """An RGB photo: ``astronaut`` (scikit-image), ``astronaut-gray`` (grey scale),
    ``astronaut-small`` (half size, then JPEG-like blur), ``astronaut-flip`` (mirrored), or a
    path to an image file."""
    import skimage.data

    if name.startswith("astronaut"):
        img = skimage.data.astronaut()
        if name == "astronaut-gray":
            g = (img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
            img = np.repeat(np.clip(g + 0.5, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
        elif name == "astronaut-small":
            import cv2

            img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2),
                             interpolation=cv2.INTER_AREA)
            img = cv2.GaussianBlur(img, (3, 3), 0.6)
        elif name == "astronaut-flip":
            img = np.ascontiguousarray(img[:, ::-1])
        elif name != "astronaut":
            raise ValueError(f"unknown portrait {name!r}")
        return np.ascontiguousarray(img)
    from .evaluate import load_image

    return load_image(name)


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------

#: Speech paths: the language-independent acoustic path, the English recognizer (English only)
#: and the ``auto`` rule.
PATHS = ("acoustic", "recognizer", "auto")


def _analyze(audio: Audio, lang: str, path: str):
    from ..speech import analyze_speech

    if path == "acoustic":
        return analyze_speech(audio, lang=lang, path="acoustic")
    if path == "recognizer":
        return analyze_speech(audio, lang="en", path="recognizer")
    return analyze_speech(audio, lang="auto")


def run_item(item: EvalItem, path: str = "acoustic", *, workdir: str | os.PathLike | None = None,
             size: int = 384, keep: bool = False, portraits: dict | None = None) -> dict[str, Any]:
    """Make the item's video from its audio alone and measure it.

    Returns the figures of :func:`~echomimic.quality.evaluate_video` (with the phone timeline,
    so ``truth_r``, ``truth_offset_frames``, the vowel widths and the bilabial closure are
    included) plus ``lang``, ``voice``, ``path``, ``method`` (what the speech stage chose) and
    ``seconds`` (wall time).
    """
    from ..pipeline import AnimateOptions, drive, load_portrait, render_video
    from .evaluate import evaluate_video

    t0 = time.perf_counter()
    audio, phones = make_item_audio(item)
    opts = AnimateOptions.from_kwargs(crop="face", size=int(size), preset="ultrafast")
    cache = portraits if portraits is not None else {}
    if item.portrait not in cache:
        img = portrait_image(item.portrait)
        cache[item.portrait] = load_portrait((img, f"evalset-{item.portrait}"), opts)
    portrait = cache[item.portrait]
    speech = _analyze(audio, item.lang, path)
    n_frames = max(1, int(round(speech.duration * opts.fps)))
    track = drive(speech=speech, motion=None, n_frames=n_frames, opts=opts)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="echomimic-evalset-")
        workdir = tmp.name
    out = Path(workdir) / f"{item.name}-{path}.mp4"
    try:
        render_video(portrait, track, out, audio=audio, opts=opts)
        res = evaluate_video(out, phones=phones, motion=track, identity=False)
    finally:
        if not keep and out.exists():
            out.unlink()
        if tmp is not None:
            tmp.cleanup()
    res.update(name=item.name, lang=item.lang, voice=item.voice, path=path,
               method=speech.method, condition=item.setting.condition, rate=item.setting.rate,
               portrait=item.portrait, split=item.split, seconds=time.perf_counter() - t0)
    return res


def run_items(items: list[EvalItem], paths: Iterable[str] = ("acoustic",), *,
              log: Callable[[str], None] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """:func:`run_item` for every item and path (the recognizer path for English items only)."""
    rows = []
    portraits: dict = {}
    for item in items:
        for path in paths:
            if path == "recognizer" and item.lang != "en":
                continue
            r = run_item(item, path, portraits=portraits, **kw)
            rows.append(r)
            if log is not None:
                log(f"{item.name} [{path}->{r['method']}] r={r.get('truth_r', float('nan')):.3f} "
                    f"off={r.get('truth_offset_frames')} closure={r.get('silence_closure'):.3f} "
                    f"w={r.get('width_spread_minus_rounded', float('nan')):+.3f} "
                    f"({r['seconds']:.1f} s)")
    return rows


def _nanmean(v: list[float]) -> float:
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (language, path): mean truth r, the offsets seen, silence closure, the
    rounded-vs-spread width difference (pooled over items), bilabial closure and loudness r."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["lang"], r["path"]), []).append(r)
    out = []
    for (lang, path), rs in groups.items():
        offs = [int(r["truth_offset_frames"]) for r in rs]
        wr = [r["width_rounded"] * r["n_rounded"] for r in rs if r["n_rounded"]]
        ws = [r["width_spread"] * r["n_spread"] for r in rs if r["n_spread"]]
        nr = sum(r["n_rounded"] for r in rs)
        ns = sum(r["n_spread"] for r in rs)
        diff = (sum(ws) / ns - sum(wr) / nr) if nr and ns else float("nan")
        closure = sum(r["silence_closure"] * r["pause_frames"] for r in rs
                      if np.isfinite(r["silence_closure"]))
        pf = sum(r["pause_frames"] for r in rs if np.isfinite(r["silence_closure"]))
        out.append({
            "lang": lang, "path": path, "items": len(rs),
            "methods": sorted({r["method"] for r in rs}),
            "truth_r": _nanmean([r["truth_r"] for r in rs]),
            "truth_r_min": float(np.nanmin([r["truth_r"] for r in rs])),
            "offset_min": min(offs), "offset_max": max(offs),
            "silence_closure": closure / pf if pf else float("nan"),
            "width_spread_minus_rounded": diff, "n_rounded": nr, "n_spread": ns,
            "bilabial_closure": _nanmean([r["bilabial_closure"] for r in rs]),
            "loudness_r": _nanmean([r["lipsync_loudness_r"] for r in rs]),
            "open_p95": _nanmean([r["open_p95"] for r in rs]),
            "jaw_r": _nanmean([r.get("jaw_r", float("nan")) for r in rs]),
        })
    return out


def format_summary(summary: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`summarize`'s rows."""
    head = ("| language | path | items | r with truth (mean / min) | offset (frames) | "
            "silence closure | spread − rounded width | p/b/m closed | r with loudness |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        off = (f"{s['offset_min']}" if s["offset_min"] == s["offset_max"]
               else f"{s['offset_min']}..{s['offset_max']}")
        lines.append(
            f"| {s['lang']} | {s['path']} | {s['items']} | {s['truth_r']:.2f} / "
            f"{s['truth_r_min']:.2f} | {off} | {100 * s['silence_closure']:.1f} % | "
            f"{s['width_spread_minus_rounded']:+.3f} | {100 * s['bilabial_closure']:.0f} % | "
            f"{s['loudness_r']:.2f} |")
    return "\n".join(lines)
