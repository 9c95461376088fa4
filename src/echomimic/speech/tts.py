"""Offline text-to-speech with espeak-ng, with the exact timing of every phoneme.

espeak-ng is loaded with :mod:`ctypes` from the ``espeakng-loader`` wheel (library and voice data
ship inside the wheel; no system installation is used). Synthesis runs in espeak's synchronous
mode; a callback collects the 16-bit samples and the ``espeakEVENT_PHONEME`` events, whose
``sample`` field gives the exact sample position at which each phoneme starts. A phoneme ends
where the next event starts.

espeak-ng keeps global state, so every call holds a module lock. Long texts are split at
sentence ends into chunks of at most ``max_chars`` characters (:func:`split_sentences`), spoken one
chunk at a time (:func:`synthesize_stream` yields them as they are ready; :func:`synthesize` joins
them), so the lock is never held for long and the first audio comes early.

``lang="auto"`` detects the text's language (:func:`echomimic.speech.textlang.detect_language`);
for the Japanese voice, kanji are first rewritten as kana
(:func:`echomimic.speech.textlang.kanji_to_kana`).
"""

from __future__ import annotations

import ctypes
import re
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidOption
from ..types import Audio, Phone
from .textlang import LANG_VOICES, prepare_text, resolve_lang, voice_for

__all__ = ["synthesize", "synthesize_stream", "split_sentences", "write_wav", "resolve_voice",
           "TtsChunk", "LANG_VOICES", "SAMPLE_RATE", "MAX_CHUNK_CHARS"]

#: espeak-ng's native output rate for its own (non-mbrola) voices.
SAMPLE_RATE = 22050

#: Longest chunk of text spoken in one espeak-ng call (characters); longer texts are split.
MAX_CHUNK_CHARS = 300

# --- espeak-ng C API (speak_lib.h) ---------------------------------------------------------
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH = 1, 2, 3


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)

_lock = threading.RLock()
_lib: ctypes.CDLL | None = None
_rate: int = SAMPLE_RATE
_state: dict = {"samples": [], "events": []}
_spoken = False          # the loaded library has synthesized since it was loaded


def _on_synth(wav, numsamples, events):  # called by espeak-ng from espeak_Synth
    if numsamples > 0 and wav:
        _state["samples"].append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    i = 0
    while events and events[i].type != _EVENT_LIST_TERMINATED:
        ev = events[i]
        if ev.type == _EVENT_PHONEME:
            raw = bytes(ev.id.string).split(b"\0", 1)[0]
            _state["events"].append((int(ev.sample), raw.decode("utf-8", "replace")))
        i += 1
    return 0


_callback = _SynthCallback(_on_synth)  # keep a reference for the library's lifetime


def _library(fresh: bool = False) -> ctypes.CDLL:
    """Load and initialize libespeak-ng (caller holds the lock).

    With ``fresh``, a library that has spoken before is unloaded and loaded again first:
    espeak-ng keeps state from one utterance to the next that no call resets (the phase of its
    pitch flutter is a static variable), so the same text would come out slightly differently
    depending on what was spoken before in the process. Reloading costs about a millisecond
    and makes every utterance depend on its own text and options only."""
    global _lib, _rate, _spoken
    if _lib is not None and fresh and _spoken:
        import _ctypes

        _lib.espeak_Terminate()
        _ctypes.dlclose(_lib._handle)
        _lib, _spoken = None, False
    if _lib is not None:
        return _lib
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    data = str(espeakng_loader.get_data_path()).encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INIT_PHONEME_EVENTS)
    if rate <= 0:
        raise RuntimeError(f"espeak-ng failed to initialize (data at {data.decode()})")
    lib.espeak_SetSynthCallback(_callback)
    _lib, _rate = lib, int(rate)
    return lib


def resolve_voice(lang: str = "en", voice: str | None = None) -> str:
    """espeak-ng voice name for a language code, or ``voice`` when given.

    ``voice`` may carry an espeak variant (``"en-us+f3"``). Raises :class:`InvalidOption` for a
    language code that has no voice (see :data:`LANG_VOICES`); ``"auto"`` must be resolved
    against the text first (:func:`echomimic.speech.textlang.resolve_lang`).
    """
    if voice:
        return voice
    return voice_for(lang)


#: Sentence ends: . ! ? ; … (followed by a space or the end) and the CJK full stops, which need
#: no space after them.
_SENTENCE_END = re.compile(r"(?<=[.!?;…])\s+|(?<=[。！？；])|\n\s*\n+|\n(?=\s*[-*•])")
_CLAUSE_END = re.compile(r"(?<=[,:，、：])\s*")


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    out: list[str] = []
    cur = ""
    for piece in pieces:
        if cur and len(cur) + 1 + len(piece) > max_chars:
            out.append(cur)
            cur = piece
        else:
            cur = f"{cur} {piece}" if cur and not _is_cjk_join(cur, piece) else cur + piece
    if cur:
        out.append(cur)
    return out


def _is_cjk_join(left: str, right: str) -> bool:
    return bool(left) and bool(right) and (ord(left[-1]) > 0x2E80 or ord(right[0]) > 0x2E80)


def split_sentences(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Split ``text`` into chunks of whole sentences of at most ``max_chars`` characters.

    Sentences end at ``. ! ? ; …`` followed by a space, at ``。！？；`` and at blank lines.
    Consecutive sentences are packed into one chunk while they fit; a sentence longer than
    ``max_chars`` is cut at commas, then at spaces, then (for scripts without spaces) every
    ``max_chars`` characters. Empty pieces are dropped; a short text is one chunk.
    """
    if max_chars < 20:
        raise InvalidOption(f"max_chars must be at least 20, got {max_chars}")
    text = text.strip()
    if len(text) <= max_chars:
        return [text] if text else []
    pieces: list[str] = []
    for sent in _SENTENCE_END.split(text):
        sent = sent.strip()
        if not sent:
            continue
        if len(sent) <= max_chars:
            pieces.append(sent)
            continue
        for clause in _pack([c.strip() for c in _CLAUSE_END.split(sent) if c.strip()], max_chars):
            if len(clause) <= max_chars:
                pieces.append(clause)
                continue
            words = clause.split()
            if len(words) > 1:
                pieces.extend(_pack(words, max_chars))
            else:
                pieces.extend(clause[i:i + max_chars] for i in range(0, len(clause), max_chars))
    return _pack(pieces, max_chars)


@dataclass
class TtsChunk:
    """One spoken chunk of a text: its audio and phonemes (times from the chunk's start) and
    where it starts in the whole (``offset`` seconds, ``index`` of the chunk)."""

    index: int
    text: str
    audio: Audio
    phones: list[Phone]
    offset: float


def _check_prosody(rate: int, pitch: int, volume: int) -> None:
    for name, val, lo, hi in (("rate", rate, 80, 450), ("pitch", pitch, 0, 100),
                              ("volume", volume, 0, 200)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or not lo <= int(val) <= hi:
            raise InvalidOption(f"{name} must be an integer in [{lo}, {hi}], got {val!r}")


def _speak(text: str, name: str, rate: int, pitch: int, volume: int) -> tuple[Audio, list[Phone]]:
    """One espeak-ng call (the text must fit one chunk)."""
    global _spoken
    with _lock:
        lib = _library(fresh=True)
        _spoken = True
        if lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise InvalidOption(f"espeak-ng has no voice {name!r}")
        lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(_PARAM_VOLUME, int(volume), 0)
        _state["samples"], _state["events"] = [], []
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        chunks, events = _state["samples"], _state["events"]
        _state["samples"], _state["events"] = [], []
        sr = _rate
    if err != 0:
        raise RuntimeError(f"espeak-ng synthesis failed (error {err})")
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    samples = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
    n = len(samples)
    phones: list[Phone] = []
    events = sorted(events, key=lambda e: e[0])  # stable; espeak emits them in order
    for k, (pos, label) in enumerate(events):
        start = min(max(pos, 0), n)
        end = min(max(events[k + 1][0], start), n) if k + 1 < len(events) else n
        if not label:
            continue
        phones.append(Phone(start=start / sr, end=end / sr, label=label, weight=1.0))
    return Audio(samples=samples, sample_rate=sr, source=f"tts:{name}"), phones


def synthesize_stream(
    text: str,
    *,
    lang: str = "en",
    voice: str | None = None,
    rate: int = 175,
    pitch: int = 50,
    volume: int = 100,
    max_chars: int = MAX_CHUNK_CHARS,
) -> Iterator[TtsChunk]:
    """Speak ``text`` chunk by chunk (whole sentences, see :func:`split_sentences`), yielding
    each :class:`TtsChunk` as soon as it is synthesized. Arguments as :func:`synthesize`.

    The options are checked and the language resolved before the first chunk is spoken.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidOption("text to speak is empty")
    _check_prosody(rate, pitch, volume)
    if voice:
        name = voice
    else:
        name = voice_for(resolve_lang(text, lang))
    pieces = split_sentences(prepare_text(text, name), max_chars)
    offset = 0.0
    for i, piece in enumerate(pieces):
        audio, phones = _speak(piece, name, rate, pitch, volume)
        yield TtsChunk(index=i, text=piece, audio=audio, phones=phones, offset=offset)
        offset += audio.duration


def synthesize(
    text: str,
    *,
    lang: str = "en",
    voice: str | None = None,
    rate: int = 175,
    pitch: int = 50,
    volume: int = 100,
    max_chars: int = MAX_CHUNK_CHARS,
) -> tuple[Audio, list[Phone]]:
    """Speak ``text`` and return the audio (at espeak's native rate) and its phoneme timing.

    Args:
        text: UTF-8 text (any script the voice reads: Han characters for ``zh``/``yue``; kana or
            kanji for ``ja``, kanji being rewritten as kana first).
        lang: language code (see :data:`LANG_VOICES`) or ``"auto"`` (detected from the text);
            ignored when ``voice`` is given.
        voice: explicit espeak-ng voice name, optionally with a variant (``"en-us+f2"``).
        rate: words per minute (80..450).
        pitch: base pitch 0..100.
        volume: amplitude 0..200 (100 is espeak's normal level).
        max_chars: longest chunk spoken in one call; longer texts are split at sentences and
            the chunks joined (:func:`synthesize_stream`).

    Returns:
        ``(Audio, phones)``: mono float32 audio at 22050 Hz and one :class:`Phone` per espeak
        phoneme event (label = espeak-ng mnemonic; ``"_"`` is a pause), in order, with
        ``start`` at the event's exact sample and ``end`` at the next event (or the audio end).
    """
    parts: list[np.ndarray] = []
    phones: list[Phone] = []
    source, sr = "tts", SAMPLE_RATE
    for chunk in synthesize_stream(text, lang=lang, voice=voice, rate=rate, pitch=pitch,
                                   volume=volume, max_chars=max_chars):
        sr, source = chunk.audio.sample_rate, chunk.audio.source
        t0 = sum(len(p) for p in parts) / sr
        parts.append(chunk.audio.samples)
        phones.extend(Phone(start=p.start + t0, end=p.end + t0, label=p.label, weight=p.weight)
                      for p in chunk.phones)
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return Audio(samples=samples.astype(np.float32, copy=False), sample_rate=sr, source=source), phones


def write_wav(path: str | Path, audio: Audio) -> Path:
    """Write mono audio as a 16-bit PCM WAV file (stdlib :mod:`wave`)."""
    path = Path(path)
    x = np.clip(np.asarray(audio.samples, np.float32), -1.0, 1.0)
    pcm = np.round(x * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(audio.sample_rate))
        w.writeframes(pcm.tobytes())
    return path
