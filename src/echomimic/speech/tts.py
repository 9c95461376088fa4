"""Offline text-to-speech with espeak-ng, with the exact timing of every phoneme.

espeak-ng is loaded with :mod:`ctypes` from the ``espeakng-loader`` wheel (library and voice data
ship inside the wheel; no system installation is used). Synthesis runs in espeak's synchronous
mode; a callback collects the 16-bit samples and the ``espeakEVENT_PHONEME`` events, whose
``sample`` field gives the exact sample position at which each phoneme starts. A phoneme ends
where the next event starts.

espeak-ng keeps global state, so every call holds a module lock.
"""

from __future__ import annotations

import ctypes
import threading
import wave
from pathlib import Path

import numpy as np

from ..errors import InvalidOption
from ..types import Audio, Phone

__all__ = ["synthesize", "write_wav", "resolve_voice", "LANG_VOICES", "SAMPLE_RATE"]

#: espeak-ng's native output rate for its own (non-mbrola) voices.
SAMPLE_RATE = 22050

#: Common language codes -> espeak-ng voice names.
LANG_VOICES: dict[str, str] = {
    "en": "en-us", "en-us": "en-us", "en-gb": "en-gb", "en-uk": "en-gb",
    "zh": "cmn", "zh-cn": "cmn", "cmn": "cmn", "mandarin": "cmn", "zh-hans": "cmn",
    "yue": "yue", "zh-hk": "yue", "cantonese": "yue",
    "ja": "ja", "jp": "ja", "ko": "ko",
    "es": "es", "es-419": "es-419", "fr": "fr", "de": "de", "it": "it", "pt": "pt",
    "pt-br": "pt-br", "nl": "nl", "ru": "ru", "pl": "pl", "tr": "tr", "ar": "ar",
    "hi": "hi", "vi": "vi", "id": "id", "ms": "ms", "th": "th", "sv": "sv", "da": "da",
    "nb": "nb", "no": "nb", "fi": "fi", "el": "el", "cs": "cs", "uk": "uk", "he": "he",
    "fa": "fa", "hu": "hu", "ro": "ro", "ca": "ca",
}

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


def _library() -> ctypes.CDLL:
    """Load and initialize libespeak-ng once (caller holds the lock)."""
    global _lib, _rate
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
    language code that has no voice.
    """
    if voice:
        return voice
    key = (lang or "en").strip().lower().replace("_", "-")
    if key in LANG_VOICES:
        return LANG_VOICES[key]
    base = key.split("-")[0]
    if base in LANG_VOICES:
        return LANG_VOICES[base]
    raise InvalidOption(
        f"unknown TTS language {lang!r}; use one of: {', '.join(sorted(set(LANG_VOICES)))}"
    )


def synthesize(
    text: str,
    *,
    lang: str = "en",
    voice: str | None = None,
    rate: int = 175,
    pitch: int = 50,
    volume: int = 100,
) -> tuple[Audio, list[Phone]]:
    """Speak ``text`` and return the audio (at espeak's native rate) and its phoneme timing.

    Args:
        text: UTF-8 text (any script the voice reads: Han characters for ``zh``, kana for ``ja``).
        lang: language code (see :data:`LANG_VOICES`), ignored when ``voice`` is given.
        voice: explicit espeak-ng voice name, optionally with a variant (``"en-us+f2"``).
        rate: words per minute (80..450).
        pitch: base pitch 0..100.
        volume: amplitude 0..200.

    Returns:
        ``(Audio, phones)``: mono float32 audio at 22050 Hz and one :class:`Phone` per espeak
        phoneme event (label = espeak-ng mnemonic; ``"_"`` is a pause), in order, with
        ``start`` at the event's exact sample and ``end`` at the next event (or the audio end).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidOption("text to speak is empty")
    for name, val, lo, hi in (("rate", rate, 80, 450), ("pitch", pitch, 0, 100),
                              ("volume", volume, 0, 200)):
        if not isinstance(val, (int, np.integer)) or not lo <= int(val) <= hi:
            raise InvalidOption(f"{name} must be an integer in [{lo}, {hi}], got {val!r}")
    name = resolve_voice(lang, voice)
    with _lock:
        lib = _library()
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
