"""Text languages: the code -> espeak-ng voice map, language detection and Japanese kana.

* :data:`LANG_VOICES` maps common language codes (ISO 639-1, a few regional tags and English
  names) to espeak-ng voice names: ``zh`` -> ``cmn`` (Mandarin), ``yue`` / ``zh-hk`` -> ``yue``
  (Cantonese), ``ja`` -> ``ja``, ...
* :func:`detect_language` guesses the language of a text: the script decides where it can (kana
  -> Japanese, Hangul -> Korean, Han characters -> Mandarin, or Cantonese when the text uses
  written-Cantonese characters such as 咗, 嘅, 唔, 係); other texts are classified by
  ``py3langid`` (a naive Bayes model over byte n-grams that ships inside the wheel), restricted
  to the languages espeak-ng speaks here.
* :func:`kanji_to_kana` rewrites kanji as hiragana with ``pykakasi`` (its dictionary ships in
  the wheel): espeak-ng's Japanese voice reads kana but would read each kanji as "Chinese
  letter".
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache

from ..errors import InvalidOption

__all__ = ["LANG_VOICES", "LANG_NAMES", "normalize_lang", "voice_for", "detect_language",
           "resolve_lang", "kanji_to_kana", "prepare_text", "is_japanese_voice"]

#: Common language codes -> espeak-ng voice names (regional tags and English names included).
LANG_VOICES: dict[str, str] = {
    "en": "en-us", "en-us": "en-us", "en-gb": "en-gb", "en-uk": "en-gb", "english": "en-us",
    "zh": "cmn", "zh-cn": "cmn", "zh-hans": "cmn", "zh-tw": "cmn", "zh-hant": "cmn",
    "cmn": "cmn", "mandarin": "cmn", "chinese": "cmn",
    "yue": "yue", "zh-hk": "yue", "zh-yue": "yue", "cantonese": "yue",
    "ja": "ja", "jp": "ja", "japanese": "ja", "ko": "ko", "korean": "ko",
    "es": "es", "es-es": "es", "es-419": "es-419", "es-mx": "es-419", "spanish": "es",
    "fr": "fr", "fr-fr": "fr", "fr-be": "fr-be", "fr-ch": "fr-ch", "french": "fr",
    "de": "de", "german": "de", "it": "it", "pt": "pt", "pt-pt": "pt", "pt-br": "pt-br",
    "nl": "nl", "ru": "ru", "pl": "pl", "tr": "tr", "ar": "ar", "hi": "hi", "vi": "vi",
    "id": "id", "ms": "ms", "th": "th", "sv": "sv", "da": "da", "nb": "nb", "no": "nb",
    "fi": "fi", "el": "el", "cs": "cs", "uk": "uk", "he": "he", "fa": "fa", "hu": "hu",
    "ro": "ro", "ca": "ca", "bg": "bg", "hr": "hr", "sk": "sk", "sl": "sl", "sr": "sr",
    "lt": "lt", "lv": "lv", "et": "et", "bn": "bn", "ta": "ta", "te": "te", "ur": "ur",
    "sw": "sw", "af": "af", "eu": "eu", "gl": "gl", "is": "is", "ga": "ga", "cy": "cy",
}

#: Display names of the main languages (documentation and messages).
LANG_NAMES: dict[str, str] = {
    "en": "English", "zh": "Mandarin Chinese", "yue": "Cantonese", "ja": "Japanese",
    "ko": "Korean", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
    "pt": "Portuguese", "ru": "Russian", "ar": "Arabic", "hi": "Hindi",
}

#: Characters used in written Cantonese but not (or hardly) in standard written Chinese.
_CANTONESE_CHARS = set("咗嘅唔係佢哋啲冇嚟喺咩乜嘢睇俾畀嗰咁噉啱嘞囉喎嘛咪揾搵攰瞓冚嬲")
_KANA = re.compile(r"[\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)

_ident_lock = threading.Lock()

#: Widely used languages; on short texts the classifier confuses neighbours (Spanish and
#: Galician, Portuguese and Galician, Indonesian and Malay), so the others are down-weighted by
#: :data:`MINOR_LANGUAGE_PRIOR` before choosing.
MAJOR_LANGUAGES = frozenset(
    "en es fr de it pt ru ar hi nl pl tr vi id sv uk el cs he fa th ro hu da fi nb bg".split())
#: Prior weight of the languages outside :data:`MAJOR_LANGUAGES`.
MINOR_LANGUAGE_PRIOR = 0.05


def normalize_lang(lang: str | None) -> str:
    """Lower-case code with ``-`` separators (``"zh_CN"`` -> ``"zh-cn"``); ``""`` for None."""
    return (lang or "").strip().lower().replace("_", "-")


def voice_for(lang: str) -> str:
    """espeak-ng voice name of a language code (``"zh"`` -> ``"cmn"``).

    A regional tag falls back to its base language (``"de-at"`` -> ``"de"``). Raises
    :class:`InvalidOption` for a code without a voice (``"auto"`` must be resolved first, see
    :func:`resolve_lang`).
    """
    key = normalize_lang(lang) or "en"
    if key in LANG_VOICES:
        return LANG_VOICES[key]
    base = key.split("-")[0]
    if base in LANG_VOICES:
        return LANG_VOICES[base]
    codes = ", ".join(sorted(c for c in LANG_VOICES if len(c) <= 3))
    raise InvalidOption(f"unknown TTS language {lang!r}; use 'auto' or one of: {codes}")


@lru_cache(maxsize=1)
def _identifier():
    """py3langid's model restricted to the languages that have an espeak-ng voice."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_pickled_model(MODEL_FILE, norm_probs=True)
    known = set(ident.nb_classes)
    ident.set_languages(sorted({c for c in LANG_VOICES if len(c) == 2} & known))
    return ident


def detect_language(text: str) -> str:
    """Language code of ``text``: ``"en"``, ``"zh"``, ``"yue"``, ``"ja"``, ``"ko"``, ``"es"``, ...

    Scripts first: any kana -> ``"ja"``; Hangul -> ``"ko"``; mostly Han characters -> ``"yue"``
    when written-Cantonese characters occur, else ``"zh"``. Other texts go to ``py3langid``,
    restricted to languages with an espeak-ng voice, with less common languages down-weighted
    (:data:`MINOR_LANGUAGE_PRIOR`). A text without letters is ``"en"``.
    Short texts (a few words) can be misclassified among close languages; pass the code then.
    """
    if not isinstance(text, str):
        raise InvalidOption("text must be a string")
    letters = _LETTER.findall(text)
    if not letters:
        return "en"
    if _KANA.search(text):
        return "ja"
    n_han = len(_HAN.findall(text))
    n_hangul = len(_HANGUL.findall(text))
    if n_hangul and n_hangul >= n_han:
        return "ko"
    if n_han and n_han >= 0.3 * len(letters):
        return "yue" if any(ch in _CANTONESE_CHARS for ch in text) else "zh"
    with _ident_lock:
        ranked = _identifier().rank(text)
    weighted = [(p * (1.0 if c in MAJOR_LANGUAGES else MINOR_LANGUAGE_PRIOR), c) for c, p in ranked]
    return str(max(weighted)[1])


def resolve_lang(text: str, lang: str | None) -> str:
    """The language to speak ``text`` in: ``lang``, or the detected one when ``lang`` is
    ``"auto"``/empty. The result is a normalized code that :func:`voice_for` accepts."""
    key = normalize_lang(lang)
    if key in ("", "auto"):
        return detect_language(text)
    voice_for(key)  # raises InvalidOption for an unknown code
    return key


@lru_cache(maxsize=1)
def _kakasi():
    import pykakasi

    return pykakasi.kakasi()


_kakasi_lock = threading.Lock()


def kanji_to_kana(text: str) -> str:
    """Japanese text with every kanji run rewritten as hiragana (readings from ``pykakasi``'s
    dictionary, chosen in context: 今日は -> こんにちは, 天気 -> てんき). Kana, Latin
    letters, digits and punctuation are kept as they are."""
    if not _HAN.search(text):
        return text
    with _kakasi_lock:
        parts = _kakasi().convert(text)
    out = []
    for p in parts:
        orig = p["orig"]
        out.append(p["hira"] if _HAN.search(orig) else orig)
    return "".join(out)


def is_japanese_voice(voice: str) -> bool:
    """Whether an espeak-ng voice name (optionally with a ``+variant``) is Japanese."""
    return voice.split("+", 1)[0].strip().lower() in ("ja", "jpx/ja")


def prepare_text(text: str, voice: str) -> str:
    """Text as the voice should read it: for the Japanese voice, NFKC-normalized (half-width
    kana folded) with kanji rewritten as kana (:func:`kanji_to_kana`); otherwise unchanged."""
    if is_japanese_voice(voice):
        text = kanji_to_kana(unicodedata.normalize("NFKC", text))
    return text
