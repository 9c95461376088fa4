"""Moderation: checks that run before a job is accepted, and may refuse it.

A moderator is a plugin registered under the ``echomimic.moderation`` entry-point group (like the
renderers). It is a class built without arguments (it reads its own configuration, for example
from the environment) with one method::

    class MyModerator:
        name = "my-moderator"

        def check(self, request: ModerationRequest) -> str | None:
            ...   # None to let the job through, or the reason for refusing it

``request`` holds the inputs as they were given (paths or bytes of the image, audio and video)
and the texts (``text``, ``transcript``, ``prompt``). :func:`moderate` runs every moderator and
raises :class:`~echomimic.errors.ContentRefused` (``422 content_refused`` in the REST API, exit
code 2 on the command line) with the first reason given.

The built-in :class:`WordListModerator` refuses texts and prompts that contain a word of the
operator's list: ``ECHOMIMIC_BLOCKED_WORDS`` (comma-separated) and/or
``ECHOMIMIC_BLOCKED_WORDS_FILE`` (one word or phrase a line, ``#`` comments). With both unset
or empty it lets everything through. Matching ignores case and Unicode width forms; an entry
in a script written without spaces (Chinese, Japanese…) matches anywhere, others match whole
words.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol

from ..errors import ContentRefused

__all__ = ["ModerationRequest", "Moderator", "WordListModerator", "moderate", "moderators",
           "ContentRefused"]

GROUP = "echomimic.moderation"
_BUILTIN = {"wordlist": "echomimic.safety.moderation:WordListModerator"}


@dataclass(frozen=True)
class ModerationRequest:
    """What a moderator sees of a job."""

    image: Any = None
    audio: Any = None
    video: Any = None
    text: str | None = None
    transcript: str | None = None
    prompt: str | None = None

    def texts(self) -> dict[str, str]:
        return {k: v for k, v in (("text", self.text), ("transcript", self.transcript),
                                  ("prompt", self.prompt)) if v}


class Moderator(Protocol):
    name: str

    def check(self, request: ModerationRequest) -> str | None: ...


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", str(text)).casefold()


def _spaceless(word: str) -> bool:
    """A word in a script written without spaces between words (CJK, Thai…)."""
    for ch in word:
        name = unicodedata.name(ch, "")
        if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER")):
            return True
    return False


class WordListModerator:
    """Refuses texts and prompts that contain a word of the operator's list (see the module)."""

    name = "wordlist"

    def __init__(self, words: list[str] | None = None):
        if words is None:
            words = [w for w in os.environ.get("ECHOMIMIC_BLOCKED_WORDS", "").split(",")]
            path = os.environ.get("ECHOMIMIC_BLOCKED_WORDS_FILE", "").strip()
            if path:
                try:
                    with open(path, encoding="utf-8") as fh:
                        words += [line.split("#", 1)[0] for line in fh]
                except OSError as exc:
                    raise RuntimeError(f"cannot read ECHOMIMIC_BLOCKED_WORDS_FILE: {exc}") from None
        self.words = sorted({_normalize(w).strip() for w in words if w and w.strip()})
        parts = [re.escape(w) if _spaceless(w) else rf"(?<!\w){re.escape(w)}(?!\w)"
                 for w in self.words]
        self._pattern = re.compile("|".join(parts)) if parts else None

    def check(self, request: ModerationRequest) -> str | None:
        if self._pattern is None:
            return None
        for field, value in request.texts().items():
            m = self._pattern.search(_normalize(value))
            if m:
                return f"the {field} contains a word this service does not accept ({m.group(0)!r})"
        return None


def _load(target: str):
    mod, _, attr = target.partition(":")
    return getattr(__import__(mod, fromlist=[attr]), attr)


def moderators() -> list[Moderator]:
    """An instance of every registered moderator (built-in word list first)."""
    found = dict(_BUILTIN)
    try:
        for ep in metadata.entry_points(group=GROUP):
            found.setdefault(ep.name, ep.value)
    except Exception:  # pragma: no cover - broken metadata must not stop the checks
        pass
    out = []
    for name, target in found.items():
        out.append(_load(target)())
    return out


def moderate(*, image: Any = None, audio: Any = None, video: Any = None,
             text: str | None = None, transcript: str | None = None,
             prompt: str | None = None) -> None:
    """Run every moderator; raise :class:`ContentRefused` with the first refusal's reason."""
    request = ModerationRequest(image=image, audio=audio, video=video, text=text,
                                transcript=transcript, prompt=prompt)
    for mod in moderators():
        reason = mod.check(request)
        if reason:
            raise ContentRefused(f"content refused by {getattr(mod, 'name', type(mod).__name__)}"
                                 f": {reason}")
