"""Prompt-directed actions: a short instruction in English or Chinese -> timed motion overlays.

``parse_prompt("smiles, then nods twice; looks left at the end", duration=6.0)`` understands

* **actions** — smile, laugh, nod, shake (the head), tilt (the head), look left / right / up /
  down, raise (the eye)brows, frown, wink, blink, close (the) eyes, surprise; in Chinese 微笑,
  大笑, 点头, 摇头, 歪头, 向左看 / 向右看 / 向上看 / 向下看, 扬眉, 皱眉, 眨一只眼 (wink), 眨眼,
  闭眼, 惊讶;
* **timing** — ``then`` / ``after that`` (然后, 接着, 再: after the previous action), ``at the
  start`` / ``first`` (一开始, 先), ``in the middle`` (中间), ``at the end`` / ``finally``
  (最后, 结尾: within the last third), ``while speaking`` / ``throughout`` (说话时, 一直),
  ``after 2 seconds`` / ``at 3 s`` (2秒后, 第3秒), ``for 2 seconds`` (持续2秒);
* **counts** — ``once``, ``twice``, ``three times``, ``4 times`` (两次, 三下);
* **strength** — ``slightly`` / ``a little`` (微微, 稍微) and ``broadly`` / ``a lot`` (用力, 大大);
* **emotion** — ``cheerfully`` / ``happily`` (开心地), ``sadly`` (难过地), ``angrily``
  (生气地), ``in a surprised voice``: sets the clip's emotion (see :mod:`.emotion`).

Left and right are the viewer's (the image's) left and right: "looks left" turns the face and
the eyes towards the left edge of the picture, "winks with the left eye" closes the eye on the
image's left.

Clauses are separated by punctuation and by ``then``; clauses joined by ``and`` / ``while``
(并, 同时, 一边) happen together; clauses in a list without a timing word follow one another. A
clause that names no action, emotion or timing produces a warning that lists what is
understood; nothing is silently ignored. When the actions do not fit the clip, their timeline is
compressed to fit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from echomimic.errors import InvalidOption
from echomimic.types import NEUTRAL, MotionTrack, Speech

__all__ = ["parse_prompt", "PromptResult", "Action", "ACTIONS", "MAX_PROMPT_CHARS"]

MAX_PROMPT_CHARS = 2000
_RATE = 100.0          # internal sample rate of the envelopes (Hz)
_MARGIN = 0.15         # s kept free at the clip's start and end
_GAP = 0.1             # s between actions that follow one another

#: Every action: (kind, seconds per repetition or default hold, channel offsets at strength 1).
#: ``kind`` is "hold" (ramps in, holds, ramps out), "gesture" (repeated cycles) or "pulse".
ACTIONS: dict[str, tuple[str, float, dict[str, float]]] = {
    "smile": ("hold", 2.0, {"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8, "cheekSquintLeft": 0.4,
                            "cheekSquintRight": 0.4, "eyeSquintLeft": 0.2, "eyeSquintRight": 0.2}),
    "laugh": ("gesture", 0.3, {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "jawOpen": 0.3,
                               "cheekSquintLeft": 0.6, "cheekSquintRight": 0.6,
                               "eyeSquintLeft": 0.5, "eyeSquintRight": 0.5, "pitch": -4.0,
                               "ty": -0.01}),
    "nod": ("gesture", 0.6, {"pitch": 9.0}),
    "shake": ("gesture", 0.75, {"yaw": 12.0}),
    "tilt": ("hold", 1.8, {"roll": 10.0}),
    "look_left": ("hold", 1.6, {"yaw": -15.0, "eyeLookInLeft": 0.6, "eyeLookOutRight": 0.6}),
    "look_right": ("hold", 1.6, {"yaw": 15.0, "eyeLookOutLeft": 0.6, "eyeLookInRight": 0.6}),
    "look_up": ("hold", 1.6, {"pitch": -10.0, "eyeLookUpLeft": 0.6, "eyeLookUpRight": 0.6,
                              "browInnerUp": 0.2}),
    "look_down": ("hold", 1.6, {"pitch": 10.0, "eyeLookDownLeft": 0.6, "eyeLookDownRight": 0.6,
                                "eyeBlinkLeft": 0.25, "eyeBlinkRight": 0.25}),
    "raise_brows": ("hold", 1.2, {"browInnerUp": 0.9, "browOuterUpLeft": 0.8,
                                  "browOuterUpRight": 0.8}),
    "frown": ("hold", 1.8, {"browDownLeft": 0.8, "browDownRight": 0.8, "mouthFrownLeft": 0.7,
                            "mouthFrownRight": 0.7, "browInnerUp": 0.15}),
    "wink": ("pulse", 0.5, {"eyeBlinkLeft": 1.0, "cheekSquintLeft": 0.3, "mouthSmileLeft": 0.3}),
    "blink": ("pulse", 0.3, {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}),
    "close_eyes": ("hold", 1.5, {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}),
    "surprise": ("hold", 1.4, {"browInnerUp": 0.9, "browOuterUpLeft": 0.9, "browOuterUpRight": 0.9,
                               "eyeWideLeft": 0.8, "eyeWideRight": 0.8, "jawOpen": 0.25,
                               "pitch": -3.0}),
}

# body actions (wave, raise a hand, open palms, point, shrug, hands together, thumbs up): their
# motion comes from echomimic.motion.gestures.body_action (kind "body")
from echomimic.motion.gestures import BODY_ACTIONS, body_action  # noqa: E402

ACTIONS.update(BODY_ACTIONS)

_SIDE_SWAP = {"eyeBlinkLeft": "eyeBlinkRight", "cheekSquintLeft": "cheekSquintRight",
              "mouthSmileLeft": "mouthSmileRight"}

# --- vocabulary ---------------------------------------------------------------------------------
_DIR_EN = r"(?:to\s+(?:the|his|her|their)\s+)?(left|right|up|upward|upwards|down|downward|downwards)"
_EN_ACTIONS: list[tuple[str, str]] = [
    ("laugh", r"\b(?:laugh\w*|giggl\w*|chuckl\w*)"),
    ("shake", r"\bshak\w*(?:\s+(?:his|her|their|the|its|one's))?\s*(?:head)?|\bhead\s*shak\w*"),
    ("nod", r"\bnod\w*"),
    ("wink", r"\bwink\w*"),
    ("close_eyes", r"\b(?:clos\w*|shut\w*)\s+(?:(?:his|her|their|the|both)\s+)?eyes\b|\beyes\s+(?:closed|shut)\b"),
    ("blink", r"\bblink\w*"),
    ("raise_brows", r"\b(?:rais\w*|lift\w*|arch\w*)\s+(?:(?:his|her|their|the|both)\s+)?(?:eye)?brows?\b"
                    r"|\b(?:eye)?brows?\s+(?:rais\w*|up|go\s+up)\b|\beyebrow\s+raise\b"),
    ("frown", r"\b(?:frown\w*|scowl\w*)"),
    ("surprise", r"\b(?:surpris\w*|gasp\w*|astonish\w*|amaz\w*|shock\w*)"),
    ("smile", r"\b(?:smil\w*|grin\w*|beam\w*)"),
    ("tilt", r"\b(?:tilt\w*|cock\w*)(?:\s+(?:his|her|their|the|its)\s+head)?"),
    ("look", r"\b(?:look\w*|glanc\w*|gaz\w*|turn\w*|peek\w*)(?:\s+(?:his|her|their|the)\s+head)?\s*"
             + _DIR_EN),
    ("thumbs_up", r"\b(?:gives?\s+(?:a\s+)?)?thumbs?[\s-]+up"),
    ("hands_together", r"\b(?:puts?\s+|putting\s+|brings?\s+|clasp\w*\s+)?(?:(?:his|her|their|the|both)\s+)?hands\s+together"
                       r"|\bclasp\w*\s+(?:(?:his|her|their|the|both)\s+)?hands"),
    ("open_palms", r"\bopen\w*\s+(?:up\s+)?(?:(?:his|her|their|the|both)\s+)?(?:palms?|hands|arms)"
                   r"|\b(?:shows?|showing)\s+(?:(?:his|her|their|the|both)\s+)?palms"),
    ("raise_hand", r"\b(?:rais\w*|lift\w*|puts?\s+up|putting\s+up)\s+(?:(?:his|her|their|the|a|one)\s+)?"
                   r"(?:(?:left|right)\s+)?hand"),
    ("wave", r"\bwav(?:e|es|ed|ing)\b(?:\s+(?:with\s+)?(?:(?:his|her|their|the|a|one)\s+)?"
             r"(?:(?:left|right)\s+)?hand\b)?(?:\s+(?:hello|hi|goodbye|bye))?"),
    ("point", r"\bpoint(?:s|ed|ing)?\b(?:\s+(?:to(?:wards?)?|at)?\s*(?:the\s+)?"
              r"(left|right|forward|ahead|front|camera|viewer))?"),
    ("shrug", r"\bshrug\w*"),
]
_ZH_DIR = {"左": "left", "右": "right", "上": "up", "下": "down"}
_ZH_ACTIONS: list[tuple[str, str]] = [
    ("laugh", r"大笑|哈哈|笑出声|开怀"),
    ("shake", r"摇头|摇摇头"),
    ("nod", r"点头|点点头|点了?点头"),
    ("wink", r"眨一?只眼|单眼眨|眨单眼|使眼色|抛媚眼|眨[左右]眼"),
    ("close_eyes", r"闭[上起]?眼|合上眼"),
    ("blink", r"眨眼|眨眨眼"),
    ("raise_brows", r"扬眉|挑眉|抬眉|扬起眉|抬起眉|眉毛上扬|挑起眉"),
    ("frown", r"皱眉|蹙眉|皱起眉"),
    ("surprise", r"惊讶|吃惊|惊奇|震惊|诧异"),
    ("smile", r"微笑|笑"),
    ("tilt", r"歪头|侧头|偏头|歪着头"),
    ("look", r"(?:[向往朝][左右上下](?:边|方|侧)?(?:看|望|瞧|转头|转)|看[向往]?[左右上下](?:边|方|面)?"
             r"|[左右上下]看|抬头看|低头看)"),
    ("wave", r"挥手|招手|挥挥手"),
    ("raise_hand", r"举[起]?手|抬[起]?手"),
    ("open_palms", r"摊手|摊开[双]?手"),
    ("point", r"指[向着]?([左右前])"),
    ("shrug", r"耸肩|耸耸肩"),
    ("hands_together", r"双手合十|合掌|双手合[拢在]"),
    ("thumbs_up", r"竖[起]?大拇指|点赞"),
]
_EMOTION_EN = [
    ("happy", r"\b(?:cheerful\w*|happ(?:y|ily)|joyful\w*|glad\w*|upbeat|delighted\w*|merr\w*)"),
    ("sad", r"\b(?:sad\w*|unhapp\w*|sorrow\w*|gloom\w*|melanchol\w*|mournful\w*|depressed)"),
    ("angry", r"\b(?:angr\w*|furious\w*|mad|annoyed|irritat\w*|rage\w*)"),
]
_EMOTION_ZH = [("happy", r"开心|高兴|愉快|快乐|欢快|兴高采烈"),
               ("sad", r"难过|伤心|悲伤|忧伤|沮丧"),
               ("angry", r"生气|愤怒|恼火|气愤")]
_VOICE_WORDS = r"\b(?:speak\w*|talk\w*|say\w*|sound\w*|voice|tone|feel\w*|mood)\b|说|讲|语气|声音"

_THEN = r"\bthen\b|\bafter\s+that\b|\bafterwards?\b|\bnext\b|\blater\b|然后|接着|之后|随后|再"
_START = r"\bat\s+the\s+(?:start|beginning)\b|\bfirst(?:ly)?\b|\binitially\b|\bto\s+begin\b|\bat\s+first\b|一开始|开始时|开头|起初|首先|先"
_END = r"\bat\s+the\s+end\b|\bin\s+the\s+end\b|\bfinally\b|\blastly\b|\bat\s+last\b|\bto\s+finish\b|\bend(?:s|ing)?\s+(?:with|by)\b|最后|结尾|结束时|末尾|最终"
_MIDDLE = r"\bin\s+the\s+middle\b|\bhalfway\b|\bmidway\b|中间|中途"
_SPEAK = r"\bwhile\s+(?:speaking|talking|saying)\b|\bwhen\s+(?:speaking|talking)\b|\bas\s+(?:he|she|they|it)\s+(?:speaks?|talks?)\b|说话时|讲话时|说话的时候|一边说话?|边说话?|说话"
_ALWAYS = r"\bthroughout\b|\bthe\s+whole\s+time\b|\ball\s+(?:the\s+)?time\b|\bcontinuously\b|\bkeeps?\b|\bconstantly\b|一直|始终|全程|持续地"
_SLIGHT = r"\bslight(?:ly)?\b|\ba\s+(?:little|bit)\b|\bsubtl[ey]\w*\b|\bgentl[ey]\w*\b|\bsoft(?:ly)?\b|微微|稍微|略微|轻轻|淡淡"
_STRONG = r"\bbroad(?:ly)?\b|\bbig\b|\bwide(?:ly)?\b|\bstrong(?:ly)?\b|\bvigorous(?:ly)?\b|\ba\s+lot\b|\bvery\b|\bheartil\w*|用力|大大|使劲|大幅"
_NUM_EN = {"once": 1, "twice": 2, "thrice": 3, "one": 1, "two": 2, "three": 3, "four": 4,
           "five": 5, "six": 6, "a couple of": 2, "several": 3, "a few": 3}
_NUM_ZH = {"一": 1, "两": 2, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "几": 3}
_COUNT_EN = re.compile(r"\b(once|twice|thrice)\b|\b(\d+|one|two|three|four|five|six|a couple of|several|a few)\s+times\b")
_COUNT_ZH = re.compile(r"([一两二三四五六几]|\d+)\s*(?:次|下|遍)")
_AT_TIME = re.compile(r"\b(?:at|after)\s+(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)\b|(\d+(?:\.\d+)?)\s*秒(?:后|钟后|时)|第\s*(\d+(?:\.\d+)?)\s*秒")
_FOR_TIME = re.compile(r"\bfor\s+(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)\b|持续\s*(\d+(?:\.\d+)?)\s*秒")
_SIDE_EN = re.compile(r"\b(left|right)\b")
_SIDE_ZH = re.compile(r"([左右])")

_SPLIT = re.compile(r"[,;.!?，；。！？、\n]+|(?=\b(?:then|after\s+that|afterwards|next)\b)|(?=然后|接着|随后|之后)")
_TOGETHER = re.compile(r"\s+(?:and|while|as|with)\s+(?!(?:speaking|talking|saying|he|she|they|it|the)\b)"
                       r"|并且|并|同时|和")


@dataclass
class Action:
    """One timed action of a prompt."""

    name: str                  # a key of ACTIONS
    start: float               # seconds
    end: float                 # seconds
    count: int = 1
    strength: float = 1.0
    phrase: str = ""           # the words it came from
    during_speech: bool = False


@dataclass
class PromptResult:
    """What a prompt asks for: overlay tracks to add in the mix, an emotion (or None), the
    scheduled actions and warnings about words that were not understood."""

    overlays: list[MotionTrack]
    emotion: str | None
    emotion_intensity: float | None
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Clause:
    text: str
    actions: list[tuple[str, str]]          # (action name, matched words)
    then: bool = False
    together: bool = False
    anchor: str | None = None               # start | middle | end | speech | always | time
    at: float | None = None
    length: float | None = None
    count: int | None = None
    strength: float = 1.0
    emotion: str | None = None
    unknown: str = ""                       # words left over that name nothing known


#: words that carry no action or timing of their own
_FILLERS = set("""and the a an he she they it its his her their him them then also again too
with while when as to of in on at for from by is are be being was will just very bit little
head face eyes eye mouth lips brows brow slowly gently briefly quickly softly calmly person
speaker man woman girl boy then finally first next after before afterwards later moment
times time seconds second sec secs both one some left right up down looks look looking
side towards toward own""".split()) | {"并", "和", "然后", "地", "的", "着", "一下", "他", "她",
                                       "再", "又", "一边", "向左", "向右", "向上", "向下", "左",
                                       "右", "上", "下", "向", "往左", "往右"}


def _understood() -> str:
    return ("understood actions: smile, laugh, nod, shake head, tilt head, look left/right/up/"
            "down, raise brows, frown, wink, blink, close eyes, surprise (微笑, 大笑, 点头, 摇头, "
            "歪头, 向左看, 扬眉, 皱眉, 眨一只眼, 眨眼, 闭眼, 惊讶); timing: then, at the start, in "
            "the middle, at the end, while speaking, throughout, after N seconds, for N seconds, "
            "once/twice/N times (然后, 一开始, 最后, 说话时, 一直, 两次); emotion: cheerfully, "
            "sadly, angrily, surprised voice (开心地, 难过地, 生气地); body (half-body photos): "
            "wave, raise a hand, open palms, point left/right/forward, shrug, hands together, "
            "thumbs up (挥手, 举手, 摊手, 指向左, 耸肩, 双手合十, 竖大拇指)")


def _side(text: str, zh: bool) -> str | None:
    m = (_SIDE_ZH if zh else _SIDE_EN).search(text)
    if not m:
        return None
    s = m.group(1)
    return {"左": "left", "右": "right"}.get(s, s)


def _find_actions(text: str) -> tuple[list[tuple[str, str]], str]:
    """Actions in a clause (in order of appearance) and the clause with them blanked out."""
    found: list[tuple[int, str, str]] = []
    rest = text
    for table, zh in ((_EN_ACTIONS, False), (_ZH_ACTIONS, True)):
        for name, pat in table:
            for m in re.finditer(pat, rest):
                words = m.group(0)
                act = name
                if name == "look":
                    if zh:
                        d = next((_ZH_DIR[c] for c in words if c in _ZH_DIR), None)
                        if words.startswith("抬头"):
                            d = "up"
                        elif words.startswith("低头"):
                            d = "down"
                    else:
                        d = m.group(1)
                        d = d.rstrip("s").replace("ward", "") if d else None
                    if d is None:
                        continue
                    act = f"look_{d}"
                if name in ("wink", "tilt"):
                    side = _side(text, zh) or (
                        "right" if name == "wink" else "left")
                    act = f"{name}:{side}"
                if name == "point":
                    d = m.group(1) if m.groups() else None
                    d = {"左": "left", "右": "right", "前": "forward", "ahead": "forward",
                         "front": "forward", "camera": "forward", "viewer": "forward"}.get(d, d)
                    act = f"point:{d or 'forward'}"
                elif name in ("wave", "raise_hand", "thumbs_up"):
                    side = _side(text, zh)
                    act = f"{name}:{side}" if side else name
                found.append((m.start(), act, words))
                rest = rest[:m.start()] + " " * len(words) + rest[m.end():]
    found.sort()
    return [(a, w) for _, a, w in found], rest


def _number(tok: str) -> int:
    if tok.isdigit():
        return int(tok)
    return _NUM_EN.get(tok, _NUM_ZH.get(tok, 1))


def _parse_clause(text: str) -> _Clause:
    low = text.lower().strip()
    actions, rest = _find_actions(low)
    c = _Clause(text=text.strip(), actions=actions)
    consumed = bool(actions)

    def has(pat: str) -> bool:
        nonlocal rest, consumed
        m = re.search(pat, rest)
        if m:
            rest = rest[:m.start()] + " " * (m.end() - m.start()) + rest[m.end():]
            consumed = True
        return bool(m)

    def blank(m: "re.Match[str]") -> None:
        nonlocal rest
        rest = rest[:m.start()] + " " * (m.end() - m.start()) + rest[m.end():]

    m = _AT_TIME.search(low)
    if m:
        c.anchor, c.at = "time", float(next(g for g in m.groups() if g))
        consumed = True
        blank(m)
    m = _FOR_TIME.search(low)
    if m:
        c.length = float(next(g for g in m.groups() if g))
        consumed = True
        blank(m)
    m = _COUNT_EN.search(low) or _COUNT_ZH.search(low)
    if m:
        c.count = max(1, min(12, _number(next(g for g in m.groups() if g))))
        consumed = True
        blank(m)
    if has(_THEN):
        c.then = True
    for anchor, pat in (("end", _END), ("start", _START), ("middle", _MIDDLE),
                        ("speech", _SPEAK), ("always", _ALWAYS)):
        if has(pat) and c.anchor is None:
            c.anchor = anchor
    if has(_SLIGHT):
        c.strength = 0.5
    elif has(_STRONG):
        c.strength = 1.4
    voice = re.search(_VOICE_WORDS, low) is not None
    for table in (_EMOTION_EN, _EMOTION_ZH):
        for name, pat in table:
            if re.search(pat, low):
                c.emotion = name
                consumed = True
                for mm in list(re.finditer(pat, rest)):
                    blank(mm)
    # words left over that name nothing known: said in a warning, never dropped silently
    left = re.sub(_VOICE_WORDS, " ", rest)
    words = [w for w in re.findall(r"[a-z]+|[\u4e00-\u9fff]+", left) if w not in _FILLERS]
    words = [w for w in words if len(w) >= 3 or re.match(r"[\u4e00-\u9fff]", w)]
    c.unknown = " ".join(words)
    if any(a == "surprise" for a, _ in c.actions) and voice and len(c.actions) == 1:
        c.actions, c.emotion = [], "surprised"       # "says it in a surprised voice"
    if not consumed:
        c.anchor = "unknown"
    return c


def _split(prompt: str) -> list[_Clause]:
    clauses: list[_Clause] = []
    for part in _SPLIT.split(prompt):
        if not part or not part.strip():
            continue
        pieces = [p for p in _TOGETHER.split(part) if p and p.strip()]
        for k, piece in enumerate(pieces):
            c = _parse_clause(piece)
            c.together = k > 0 and not c.then
            clauses.append(c)
    # a clause of only timing words ("then", "at the end") applies to its neighbour
    merged: list[_Clause] = []
    for c in clauses:
        if merged and not merged[-1].actions and merged[-1].anchor != "unknown" \
                and merged[-1].emotion is None and c.actions:
            prev = merged.pop()
            c.then = c.then or prev.then
            c.anchor = c.anchor or prev.anchor
            c.at = c.at if c.at is not None else prev.at
            c.count = c.count or prev.count
        elif merged and c.actions == [] and c.anchor not in (None, "unknown") \
                and c.emotion is None and merged[-1].actions:
            prev = merged[-1]
            prev.anchor = prev.anchor or c.anchor
            prev.at = prev.at if prev.at is not None else c.at
            prev.count = prev.count or c.count
            if c.length:
                prev.length = c.length
            if c.unknown:
                prev.unknown = (prev.unknown + " " + c.unknown).strip()
            continue
        merged.append(c)
    return merged


# --- envelopes -----------------------------------------------------------------------------------


def _hold_env(t: np.ndarray, start: float, end: float) -> np.ndarray:
    ramp = min(0.25, 0.3 * (end - start))
    up = np.clip((t - start) / max(ramp, 1e-3), 0, 1)
    down = np.clip((end - t) / max(ramp, 1e-3), 0, 1)
    e = np.minimum(up, down)
    return e * e * (3 - 2 * e)


def _gesture(name: str, t: np.ndarray, start: float, end: float, count: int) -> np.ndarray:
    """Signed cycle envelope of a repeated gesture (nod: down and back; shake: one way, the
    other, back; laugh: pulses of the jaw on a held smile)."""
    u = np.clip((t - start) / max(end - start, 1e-3), 0, 1) * count
    inside = (t >= start) & (t <= end)
    frac = u - np.floor(np.minimum(u, count - 1e-9))
    if name == "shake":
        return np.where(inside, np.sin(2 * np.pi * frac) * np.sin(np.pi * np.clip(
            (t - start) / max(end - start, 1e-3), 0, 1)) ** 0.3, 0.0)
    return np.where(inside, np.sin(np.pi * frac) ** 2, 0.0)


def _speech_mask(speech: Speech | None, t: np.ndarray) -> np.ndarray | None:
    if speech is None or speech.n == 0:
        return None
    act = np.asarray(speech.activity, np.float64)
    idx = np.clip((t / speech.hop).astype(np.int64), 0, speech.n - 1)
    from scipy.ndimage import gaussian_filter1d

    return np.clip(gaussian_filter1d((act[idx] >= 0.5).astype(np.float64), 0.08 * _RATE), 0, 1)


def _spans(mask: np.ndarray, t: np.ndarray) -> list[tuple[float, float]]:
    on = mask >= 0.5
    out, i = [], 0
    while i < len(on):
        if on[i]:
            j = i
            while j < len(on) and on[j]:
                j += 1
            out.append((float(t[i]), float(t[j - 1])))
            i = j
        else:
            i += 1
    return out


def parse_prompt(prompt: str, *, duration: float, fps: float = 25.0,
                 speech: Speech | None = None, body: dict | None = None) -> PromptResult:
    """Turn a prompt (English or Chinese) into timed action overlays.

    Args:
        prompt: e.g. ``"smiles, then nods twice; looks left at the end"`` or ``"微笑并点头"``.
        duration: length of the clip in seconds (the actions are fitted into it).
        fps: frame rate of the overlay track (the output's).
        speech: the clip's speech, for ``while speaking`` (without it, the whole clip).
        body: the photo's arm joints in shoulder widths (``r_shoulder`` … ``l_wrist``), so body
            actions reach their poses from the photo's own; None assumes hanging arms.

    Returns:
        :class:`PromptResult`: ``overlays`` (one track with the actions' offsets from neutral, or
        none), ``emotion`` / ``emotion_intensity`` when the prompt sets a tone ("speaks
        cheerfully"), the scheduled ``actions`` and ``warnings`` for clauses not understood.

    Raises:
        InvalidOption: an empty or over-long prompt, or a bad duration or fps.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidOption("the prompt is empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidOption(f"the prompt has {len(prompt)} characters, over the limit of "
                            f"{MAX_PROMPT_CHARS}")
    if not math.isfinite(float(duration)) or float(duration) <= 0:
        raise InvalidOption(f"duration must be positive, got {duration!r}")
    if not math.isfinite(float(fps)) or not 0 < float(fps) <= 240:
        raise InvalidOption(f"fps must be between 0 and 240, got {fps!r}")
    duration, fps = float(duration), float(fps)
    clauses = _split(prompt)
    warnings: list[str] = []
    emotion, emotion_strength = None, None
    for c in clauses:
        if c.anchor == "unknown":
            warnings.append(f"prompt: did not understand {c.text!r}; {_understood()}")
        elif c.unknown:
            warnings.append(f"prompt: did not understand {c.unknown!r} in {c.text!r}; "
                            f"{_understood()}")
        if c.emotion and not c.actions:
            emotion = c.emotion
            emotion_strength = {0.5: 0.3, 1.0: 0.6, 1.4: 0.9}[c.strength]
        elif c.emotion and c.actions and emotion is None and c.anchor in (None, "always"):
            emotion, emotion_strength = c.emotion, 0.6

    t = np.arange(int(math.ceil(duration * _RATE)) + 1) / _RATE
    speak = _speech_mask(speech, t)
    t0 = min(0.3, 0.1 * duration)
    scheduled: list[tuple[_Clause, str, str, float, float, int]] = []
    cursor = t0
    prev_start = t0
    chain: list[int] = []          # indices of scheduled items that follow the cursor
    for c in clauses:
        if not c.actions:
            continue
        for k, (act, words) in enumerate(c.actions):
            base = act.split(":")[0]
            kind, unit, _ = ACTIONS[base]
            count = c.count or 1
            if kind == "hold":
                length = c.length or unit
            elif base == "laugh":
                length = c.length or 1.6 * count
            else:
                length = c.length or unit * count
            if c.anchor in ("speech", "always"):
                start, end = 0.0, duration
            elif c.anchor == "start":
                length = min(length, duration / 3)
                start, end = t0, t0 + length
                chain.append(len(scheduled))
            elif c.anchor == "end":
                length = min(length, duration / 3 - _MARGIN)
                end = duration - _MARGIN
                start = max(end - length, 2 * duration / 3)
            elif c.anchor == "middle":
                start = max(0.0, duration / 2 - length / 2)
                end = min(duration, start + length)
            elif c.anchor == "time":
                start = min(max(0.0, float(c.at)), max(0.0, duration - 0.2))
                end = min(duration, start + length)
            else:
                together = c.together or k > 0
                start = prev_start if together else (cursor if not scheduled else cursor + _GAP)
                end = start + length
                chain.append(len(scheduled))
            scheduled.append((c, act, words, start, end, count))
            if c.anchor in (None, "start"):
                prev_start = start
                cursor = max(cursor, end)
    # fit the chained actions into the clip
    if chain:
        last = max(scheduled[i][4] for i in chain)
        limit = duration - _MARGIN
        if last > limit and last > t0:
            f = max(limit - t0, 0.05) / (last - t0)
            for i in chain:
                c, act, words, s, e, n = scheduled[i]
                scheduled[i] = (c, act, words, t0 + (s - t0) * f, t0 + (e - t0) * f, n)

    channels: dict[str, np.ndarray] = {}
    actions: list[Action] = []
    for c, act, words, start, end, count in scheduled:
        base, _, side = act.partition(":")
        kind, unit, offsets = ACTIONS[base]
        during = c.anchor == "speech"
        if kind == "body":
            b_start, b_end = (t0, duration - _MARGIN) if c.anchor in ("speech", "always") else (start, end)
            actions.append(Action(name=act.replace(":", "_") if side else act, start=round(b_start, 3),
                                  end=round(b_end, 3), count=count, strength=c.strength,
                                  phrase=words.strip(), during_speech=during))
            for ch, col in body_action(base, side or None, t, b_start, b_end, count, c.strength,
                                       rest=body).items():
                channels[ch] = channels.get(ch, np.zeros_like(t)) + col
            continue
        if kind == "hold":
            env = _hold_env(t, start, end)
            if during:
                env = speak if speak is not None else _hold_env(t, 0.0, duration)
        elif kind == "gesture":
            if c.anchor in ("speech", "always"):
                spans = _spans(speak, t) if (during and speak is not None) else [(t0, duration - _MARGIN)]
                env = np.zeros_like(t)
                for s, e in spans:
                    n = max(1, int(round((e - s) / (unit * 2.5))))
                    env = np.maximum(env, _gesture(base, t, s, s + min(e - s, n * unit), n))
            elif base == "laugh":
                env = _gesture(base, t, start, end, max(1, int(round((end - start) / unit))))
            else:
                env = _gesture(base, t, start, end, count)
            if base == "laugh":
                env = 0.5 * _hold_env(t, start, end) + 0.5 * env
        else:  # pulse: count quick closures
            env = np.zeros_like(t)
            span = (end - start) / count
            for r in range(count):
                s = start + r * span
                env = np.maximum(env, _hold_env(t, s + 0.05 * span, s + 0.85 * span))
        actions.append(Action(name=act.replace(":", "_") if side else act, start=round(start, 3),
                              end=round(end, 3), count=count, strength=c.strength,
                              phrase=words.strip(), during_speech=during))
        for ch, off in offsets.items():
            if base == "wink" and side == "left":
                ch = _SIDE_SWAP.get(ch, ch)        # image-left eye = the subject's right eye
            if base == "tilt":
                off = -abs(off) if side == "left" else abs(off)
            channels[ch] = channels.get(ch, np.zeros_like(t)) + c.strength * off * env

    overlays: list[MotionTrack] = []
    if channels:
        n_frames = max(1, int(round(duration * fps)))
        ft = np.arange(n_frames) / fps
        names = sorted(channels)
        vals = np.stack([NEUTRAL[ch] + np.interp(ft, t, channels[ch]) for ch in names], axis=1)
        overlays.append(MotionTrack(fps=fps, channels=names, values=vals.astype(np.float32),
                                    meta={"generator": "prompt", "prompt": prompt}))
    if not actions and emotion is None and not warnings:
        warnings.append(f"prompt: nothing to do in {prompt!r}; {_understood()}")
    return PromptResult(overlays=overlays, emotion=emotion, emotion_intensity=emotion_strength,
                        actions=actions, warnings=warnings)
