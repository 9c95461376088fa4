"""The one option table: every option of ``animate`` once, with its type, default, limits, help
and the fronts that show it.

The command line (``echomimic animate --kebab-case``), the REST API (its OpenAPI schema and the
validation of a request), GraphQL and the web UI are all generated from :data:`OPTIONS`, and
:class:`AnimateOptions` (the options the pipeline runs with) is made from it and validated by
it. An option added here, as one :class:`Option` entry, appears on every front with the same name,
default and limits.

This module imports nothing of the pipeline's stages (they are imported lazily, only where a
check needs one), so every front may import it at start-up.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import InvalidOption

__all__ = ["Option", "OPTIONS", "OPTION_HELP", "FRONTS", "AnimateOptions", "option", "options_for",
           "cli_flag", "coerce", "check_value", "json_schema", "limits_text"]

#: The fronts an option can be shown on. ``rest`` covers REST and GraphQL (what a client of the
#: service may set); an option not on ``rest`` is the server's to decide (limits, server paths).
FRONTS: frozenset[str] = frozenset({"cli", "rest", "ui"})


@dataclass(frozen=True)
class Option:
    """One option of ``animate``.

    ``minimum``/``maximum`` bound a number (inclusive); ``choices`` are the accepted values of a
    string (``multiple``: a comma-separated list of them, e.g. ``drive=head,eyes``);
    ``suggestions`` only (values shown, others accepted too: languages, renderers);
    ``optional``: ``None`` is a valid value (the pipeline decides). ``check`` is an extra
    validation for what the fields above cannot say (it raises :class:`InvalidOption`).
    ``ui`` tells the web UI how to draw the control (``group``, ``widget``, ``step``,
    ``label``); it never changes the name, default or limits.
    """

    name: str
    type: type                                  # int, float, str or bool
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    multiple: bool = False
    suggestions: bool = False
    optional: bool = False
    fronts: frozenset[str] = FRONTS
    check: Callable[[Any], None] | None = None
    cli_flag: str | None = None                 # e.g. "--relative/--absolute" for a bool
    ui: dict[str, Any] = field(default_factory=dict)

    @property
    def strict_choices(self) -> tuple[str, ...]:
        """The choices a value must be one of (empty when any value, or a suggestion, goes)."""
        return () if self.suggestions else self.choices


def _check_max_side(v: Any) -> None:
    if 0 < int(v) < 64:
        raise InvalidOption(f"max_side must be 0 or at least 64, got {v}")


def _check_emotion(v: Any) -> None:
    from .motion.emotion import check_emotion

    check_emotion(v)          # the emotion's synonyms ("joy") are accepted there


def _check_label(v: Any) -> None:
    if v is not None and len(str(v)) > 80:
        raise InvalidOption("label must be at most 80 characters")


_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
            "veryslow", "placebo")
_SERVER = frozenset({"cli", "ui"})

#: The table. Order is the order of ``--help``, the OpenAPI schema and the UI's panels.
OPTIONS: tuple[Option, ...] = (
    Option("fps", float, 25.0, "Output frame rate.", minimum=1, maximum=60,
           ui={"group": "motion", "widget": "slider", "step": 1, "label": "Frame rate (fps)"}),
    Option("crop", str, "none", "'none' keeps the whole photo; 'face' crops a face-centred square.",
           choices=("none", "face"), ui={"group": "main", "widget": "radio", "label": "Crop"}),
    Option("size", int, 512, "Side of the square when --crop face.", minimum=64, maximum=4096,
           ui={"group": "main", "widget": "slider", "step": 32, "label": "Size (crop face)"}),
    Option("max_side", int, 1920, "Downscale so the longer side is at most this; 0 keeps the "
           "original size (otherwise at least 64).", minimum=0, check=_check_max_side,
           ui={"group": "advanced", "widget": "number", "label": "Longest side (0 = original)"}),
    Option("seed", int, 0, "Seed of all randomness (blinks, head motion).", minimum=0,
           ui={"group": "motion", "widget": "number"}),
    Option("lang", str, "auto", "Speech language (recognition and TTS), e.g. en, zh; 'auto' "
           "detects.", ui={"group": ("speech", "voice"), "widget": "dropdown", "custom": True,
                           "label": "Language"}),
    Option("voice", str, None, "espeak-ng voice for --text, e.g. en-us+f3 (default: from --lang).",
           optional=True, ui={"group": "voice", "widget": "dropdown", "custom": True}),
    Option("rate", int, 175, "TTS speaking rate, words per minute.", minimum=80, maximum=450,
           ui={"group": "voice", "widget": "slider", "step": 5,
               "label": "Rate (words per minute)"}),
    Option("pitch", int, 50, "TTS base pitch.", minimum=0, maximum=99,
           ui={"group": "voice", "widget": "slider", "step": 1}),
    Option("volume", int, 100, "TTS volume.", minimum=0, maximum=200,
           ui={"group": "voice", "widget": "slider", "step": 5}),
    Option("expression_scale", float, 1.0, "Scale of mouth and face expressions.", minimum=0,
           maximum=3, ui={"group": "motion", "widget": "slider", "step": 0.05}),
    Option("head_motion_scale", float, 1.0, "Scale of head motion (0 keeps the head still).",
           minimum=0, maximum=3, ui={"group": "motion", "widget": "slider", "step": 0.05}),
    Option("blink_rate", float, None, "Blinks per minute (default: natural, about 17).",
           minimum=0, maximum=60, optional=True,
           ui={"group": "motion", "widget": "number",
               "label": "Blink rate (per minute; empty = natural)"}),
    Option("emotion", str, "neutral", "Expression bias of the whole clip.",
           choices=("neutral", "happy", "sad", "angry", "surprised"), check=_check_emotion,
           ui={"group": "main", "widget": "dropdown"}),
    Option("emotion_intensity", float, 0.5, "Strength of the expression bias.", minimum=0,
           maximum=1, ui={"group": "main", "widget": "slider", "step": 0.05}),
    Option("drive", str, "all", "Regions that follow a driving video (comma list).",
           choices=("all", "head", "eyes", "brows", "lips"), multiple=True,
           ui={"group": "video", "widget": "checkboxes", "label": "Regions driven by the video"}),
    Option("motion_scale", float, 1.0, "Strength of the driving video's motion (expression and "
           "head scales multiply on top).", minimum=0, maximum=3,
           ui={"group": "video", "widget": "slider", "step": 0.05}),
    Option("loop", str, "pingpong", "When the driving video or pose sequence is shorter than "
           "the speech ('speech': a pose sequence hands over to speech gestures).",
           choices=("pingpong", "repeat", "hold", "speech"),
           ui={"group": "video", "widget": "radio",
               "label": "When the video is shorter than the speech"}),
    Option("relative", bool, True, "Head pose and body relative to the driver's first pose, "
           "scaled to this person (--absolute: as measured; for a pose sequence, joints where "
           "it puts them).", cli_flag="--relative/--absolute",
           ui={"group": "video", "widget": "checkbox",
               "label": "Head pose relative to the video's first frame"}),
    Option("gesture_scale", float, 1.0, "Body motion of a half-body photo (speech gestures, "
           "pose sequence, prompt body actions); 0 keeps the arms still.", minimum=0, maximum=3,
           ui={"group": "body", "widget": "slider", "step": 0.05, "label": "Gesture scale"}),
    Option("face_index", int, 0, "Which face when the photo has several (0 = the largest).",
           minimum=0, ui={"group": "advanced", "widget": "number",
                          "label": "Face (0 = the largest)"}),
    Option("renderer", str, "warp", "Renderer plugin (see 'echomimic renderers').",
           suggestions=True, ui={"group": "advanced", "widget": "dropdown"}),
    Option("weights", str, None, "Local folder with the renderer's weights (neural renderers).",
           optional=True, fronts=_SERVER,
           ui={"group": "advanced", "widget": "text", "label": "Renderer weights (local folder)"}),
    Option("max_duration", float, 600.0, "Longest accepted speech, in seconds.", minimum=1,
           fronts=_SERVER, ui={"group": "advanced", "widget": "number",
                               "label": "Longest speech accepted (s)"}),
    Option("max_pixels", int, 4096 * 4096, "Largest accepted photo, in pixels.", minimum=1,
           fronts=_SERVER, ui={"group": "advanced", "widget": "number",
                               "label": "Largest photo accepted (pixels)"}),
    Option("crf", int, 20, "H.264 quality (lower is better and bigger).", minimum=0, maximum=51,
           ui={"group": "advanced", "widget": "slider", "step": 1,
               "label": "Video quality (CRF, lower is better)"}),
    Option("preset", str, "veryfast", "x264 speed preset.", choices=_PRESETS,
           ui={"group": "advanced", "widget": "dropdown", "label": "Encoder preset"}),
    Option("accelerated", bool, False, "Neural renderers: the accelerated weights (_acc files: "
           "6 steps, no guidance).",
           ui={"group": "advanced", "widget": "checkbox", "label": "Accelerated (neural)"}),
    Option("output_format", str, None, "mp4 (H.264+AAC), webm (VP9+Opus), mov (H.264+AAC) or "
           "gif (no sound); default: the output file's extension (mp4 on the service).",
           choices=("mp4", "webm", "mov", "gif"), optional=True,
           fronts=frozenset({"cli", "rest"})),
    Option("watermark", bool, True, "Invisible watermark in the frames (--no-watermark: none; "
           "the AI-generated label in the file's tags is always written).",
           fronts=_SERVER, cli_flag="--watermark/--no-watermark",
           ui={"group": "advanced", "widget": "checkbox", "label": "Invisible watermark"}),
    Option("label", str, None, 'Visible caption in a corner of every frame, e.g. "AI-generated" '
           "(at most 80 characters).", optional=True, check=_check_label,
           ui={"group": "advanced", "widget": "text", "label": "Visible caption"}),
    Option("label_corner", str, "bottom-right", "Corner of the visible caption.",
           choices=("bottom-right", "bottom-left", "top-right", "top-left"),
           ui={"group": "advanced", "widget": "dropdown", "label": "Caption corner"}),
    Option("label_opacity", float, 0.8, "Opacity of the visible caption.", minimum=0, maximum=1,
           ui={"group": "advanced", "widget": "slider", "step": 0.05, "label": "Caption opacity"}),
)

_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
if len(_BY_NAME) != len(OPTIONS):  # pragma: no cover - a mistake in the table
    raise RuntimeError("the option table names an option twice")

#: Help text by option name (what ``--help`` and the UI's hints say).
OPTION_HELP: dict[str, str] = {o.name: o.help for o in OPTIONS}


def option(name: str) -> Option:
    """The table's entry of ``name`` (``KeyError`` when there is none)."""
    return _BY_NAME[name]


def options_for(front: str) -> tuple[Option, ...]:
    """The options shown on ``front`` (``cli``, ``rest`` or ``ui``), in the table's order."""
    if front not in FRONTS:
        raise ValueError(f"unknown front {front!r}; one of {', '.join(sorted(FRONTS))}")
    return tuple(o for o in OPTIONS if front in o.fronts)


def cli_flag(opt: Option) -> str:
    """The command-line spelling: ``max_side`` -> ``--max-side`` (a bool: its on/off pair)."""
    return opt.cli_flag or "--" + opt.name.replace("_", "-")


def _num(v: float) -> str:
    return f"{v:g}"


def limits_text(opt: Option) -> str:
    """The limits in words, as every front prints them: ``1-60``, ``>= 0``, ``none|face``."""
    if opt.choices:
        return ("list of " if opt.multiple else "") + "|".join(opt.choices)
    if opt.minimum is not None and opt.maximum is not None:
        return f"{_num(opt.minimum)}-{_num(opt.maximum)}"
    if opt.minimum is not None:
        return f">= {_num(opt.minimum)}"
    if opt.maximum is not None:
        return f"<= {_num(opt.maximum)}"
    return ""


# ------------------------------------------------------------------------------------------------
# values: coercion (form strings, JSON) and validation
# ------------------------------------------------------------------------------------------------


def coerce(opt: Option, value: Any) -> Any:
    """A value from a form string or JSON as the option's type (``None``: not given / empty)."""
    if value is None or (isinstance(value, str) and value.strip() == "" and opt.type is not str):
        return None
    if isinstance(value, str) and value.strip() == "" and opt.optional:
        return None
    kind = opt.type
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            v = str(value).strip().lower()
            if v in ("true", "1", "yes", "on"):
                return True
            if v in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        what = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, "a string")
        raise InvalidOption(f"{opt.name} must be {what}, got {value!r}") from None


def check_value(opt: Option, value: Any) -> None:
    """Raise :class:`InvalidOption` when ``value`` is outside the option's limits."""
    if value is None:
        if not opt.optional:
            raise InvalidOption(f"{opt.name} must be given")
        return
    if opt.type in (int, float):
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise InvalidOption(f"{opt.name} must be a number, got {value!r}") from None
        if opt.type is int and not x.is_integer():
            raise InvalidOption(f"{opt.name} must be an integer, got {value!r}")
        lo, hi = opt.minimum, opt.maximum
        if not math.isfinite(x) or (lo is not None and x < lo) or (hi is not None and x > hi):
            if lo is not None and hi is not None:
                raise InvalidOption(f"{opt.name} must be between {_num(lo)} and {_num(hi)}, "
                                    f"got {value}")
            if lo is not None:
                raise InvalidOption(f"{opt.name} must be at least {_num(lo)}, got {value}")
            raise InvalidOption(f"{opt.name} must be at most {_num(hi)}, got {value}")
    if opt.check is not None:
        opt.check(value)
    elif opt.strict_choices:
        if opt.multiple:
            parts = {p.strip() for p in str(value).split(",") if p.strip()}
            if not parts or not parts <= set(opt.choices):
                raise InvalidOption(f"{opt.name} must be a comma-separated list of "
                                    f"{', '.join(opt.choices)}; got {value!r}")
        elif value not in opt.choices:
            raise InvalidOption(f"{opt.name} must be one of {', '.join(opt.choices)}, "
                                f"got {value!r}")


# ------------------------------------------------------------------------------------------------
# AnimateOptions: a dataclass made from the table
# ------------------------------------------------------------------------------------------------


def _from_kwargs(cls, **kw: Any):
    """Options from keyword arguments: unknown names are refused, ``None`` means the default
    (except for the optional options, where ``None`` is a value), then :meth:`validate`."""
    unknown = sorted(set(kw) - set(_BY_NAME))
    if unknown:
        raise InvalidOption(f"unknown option(s): {', '.join(unknown)}")
    opts = cls(**{k: v for k, v in kw.items() if v is not None or _BY_NAME[k].optional})
    opts.validate()
    return opts


def _validate(self) -> None:
    """Check every option against the table's limits (raises :class:`InvalidOption`)."""
    for opt in OPTIONS:
        check_value(opt, getattr(self, opt.name))
    if self.accelerated and self.renderer == "warp":
        raise InvalidOption("accelerated applies to the neural renderers (echomimic-v1, "
                            "echomimic-v2), not warp")


def _make_options_class():
    specs = []
    for o in OPTIONS:
        tp = Optional[o.type] if o.optional else o.type
        specs.append((o.name, tp, field(default=o.default)))
    cls = dataclasses.make_dataclass(
        "AnimateOptions", specs,
        namespace={"from_kwargs": classmethod(_from_kwargs), "validate": _validate})
    cls.__module__ = __name__
    cls.__doc__ = ("Options shared by every front (snake_case in Python/JSON, --kebab-case on "
                   "the CLI), one field per entry of :data:`echomimic.options.OPTIONS`.")
    return cls


AnimateOptions = _make_options_class()


# ------------------------------------------------------------------------------------------------
# JSON Schema (OpenAPI)
# ------------------------------------------------------------------------------------------------


def json_schema(opt: Option) -> dict[str, Any]:
    """The JSON Schema of one option, as the OpenAPI description publishes it."""
    kind = {bool: "boolean", int: "integer", float: "number"}.get(opt.type, "string")
    out: dict[str, Any] = {"type": [kind, "null"] if opt.optional else kind,
                           "default": opt.default, "description": opt.help}
    if opt.minimum is not None:
        out["minimum"] = opt.minimum
    if opt.maximum is not None:
        out["maximum"] = opt.maximum
    if opt.strict_choices and not opt.multiple:
        out["enum"] = list(opt.choices)
    elif opt.choices:
        out["examples"] = list(opt.choices)     # a comma list of them, or suggestions
    return out
