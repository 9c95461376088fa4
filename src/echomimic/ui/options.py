"""The web UI's option controls, generated from :class:`echomimic.pipeline.AnimateOptions`.

Every field of ``AnimateOptions`` becomes one :class:`OptionSpec` (its name, type and default come
from the dataclass; its help text from the command line's ``OPTION_HELP``), so the page, the
command line and the Python API share one set of names and defaults. :data:`CONTROL_HINTS` only
adds how a field is best shown (a slider's range, a list of choices, where it sits on the page).
A field added to ``AnimateOptions`` later appears in the "Advanced options" panel on its own.

This module does not import Gradio: the page is built by :mod:`echomimic.ui.app`.
"""

from __future__ import annotations

import re
import typing
from dataclasses import MISSING, dataclass, fields
from typing import Any, Iterable

__all__ = ["OptionSpec", "CONTROL_HINTS", "GROUPS", "MODES", "SERVER_ONLY", "option_specs",
           "collect_options", "label_for"]

#: The page's modes: what drives the portrait.
MODES: tuple[str, ...] = ("audio", "video", "mixed", "text")

#: Where a control sits. ``speech``/``voice``/``video`` controls are drawn in the tab of each mode
#: that uses them; the others once, below the tabs.
GROUPS: dict[str, str] = {
    "main": "Options",
    "motion": "Motion and expression",
    "advanced": "Advanced options",
    "speech": "Speech",
    "voice": "Voice",
    "video": "Video driving",
    "body": "Half body (arms and hands)",
}

#: Modes in which each tab-bound group is used.
GROUP_MODES: dict[str, tuple[str, ...]] = {
    "speech": ("audio", "mixed"),
    "voice": ("text",),
    "video": ("video", "mixed"),
}

#: Options a REST server decides for itself (limits, paths on the server): not sent to it.
SERVER_ONLY: frozenset[str] = frozenset({"max_duration", "max_pixels", "weights"})

_REGIONS = ("all", "head", "eyes", "brows", "lips")


def _emotions() -> tuple[str, ...]:
    from ..motion.emotion import EMOTIONS

    return tuple(EMOTIONS)


def _languages() -> list[tuple[str, str]]:
    from ..speech.textlang import LANG_NAMES, LANG_VOICES

    codes = sorted({c for c in LANG_VOICES if len(c) <= 3 or c in ("en-gb", "pt-br", "es-419")})
    out = [("auto (detect)", "auto")]
    out += [(f"{c} - {LANG_NAMES[c]}" if c in LANG_NAMES else c, c) for c in codes]
    return out


def _voices() -> list[tuple[str, str]]:
    from ..speech.textlang import LANG_VOICES

    names = sorted(set(LANG_VOICES.values()))
    out = [("default for the language", "")]
    for n in ("en-us", "en-gb", "cmn"):
        out += [(f"{n} (female)", f"{n}+f3"), (f"{n} (male)", f"{n}+m3")]
    out += [(n, n) for n in names]
    return out


def _renderers() -> list[str]:
    try:
        from ..render import available_renderers

        return sorted(available_renderers())
    except Exception:  # a broken plugin must not take the page down
        return ["warp"]


#: How each field is shown. Keys: ``group`` (see :data:`GROUPS`), ``widget`` (slider, number,
#: dropdown, radio, checkboxes, checkbox, text), ``minimum``/``maximum``/``step``, ``choices``
#: (a list, or a function returning one, called when the page is built), ``label``.
CONTROL_HINTS: dict[str, dict[str, Any]] = {
    "crop": {"group": "main", "widget": "radio", "choices": ["none", "face"],
             "label": "Crop"},
    "size": {"group": "main", "widget": "slider", "minimum": 64, "maximum": 1024, "step": 32,
             "label": "Size (crop face)"},
    "emotion": {"group": "main", "widget": "dropdown", "choices": _emotions},
    "emotion_intensity": {"group": "main", "widget": "slider", "minimum": 0, "maximum": 1,
                          "step": 0.05},
    "fps": {"group": "motion", "widget": "slider", "minimum": 1, "maximum": 60, "step": 1,
            "label": "Frame rate (fps)"},
    "expression_scale": {"group": "motion", "widget": "slider", "minimum": 0, "maximum": 3,
                         "step": 0.05},
    "head_motion_scale": {"group": "motion", "widget": "slider", "minimum": 0, "maximum": 3,
                          "step": 0.05},
    "blink_rate": {"group": "motion", "widget": "number", "minimum": 0, "maximum": 60,
                   "label": "Blink rate (per minute; empty = natural)"},
    "seed": {"group": "motion", "widget": "number", "minimum": 0},
    "lang": {"group": ("speech", "voice"), "widget": "dropdown", "choices": _languages,
             "custom": True, "label": "Language"},
    "voice": {"group": "voice", "widget": "dropdown", "choices": _voices, "custom": True},
    "rate": {"group": "voice", "widget": "slider", "minimum": 80, "maximum": 450, "step": 5,
             "label": "Rate (words per minute)"},
    "pitch": {"group": "voice", "widget": "slider", "minimum": 0, "maximum": 99, "step": 1},
    "volume": {"group": "voice", "widget": "slider", "minimum": 0, "maximum": 200, "step": 5},
    "drive": {"group": "video", "widget": "checkboxes", "choices": list(_REGIONS),
              "label": "Regions driven by the video"},
    "motion_scale": {"group": "video", "widget": "slider", "minimum": 0, "maximum": 3,
                     "step": 0.05},
    "loop": {"group": "video", "widget": "radio", "choices": ["pingpong", "repeat", "hold"],
             "label": "When the video is shorter than the speech"},
    "gesture_scale": {"group": "body", "widget": "slider", "minimum": 0, "maximum": 3,
                      "step": 0.05, "label": "Gesture scale (0 = still arms)"},
    "relative": {"group": "video", "widget": "checkbox",
                 "label": "Head pose relative to the video's first frame"},
    "max_side": {"group": "advanced", "widget": "number", "minimum": 0,
                 "label": "Longest side (0 = original)"},
    "face_index": {"group": "advanced", "widget": "number", "minimum": 0,
                   "label": "Face (0 = the largest)"},
    "renderer": {"group": "advanced", "widget": "dropdown", "choices": _renderers},
    "weights": {"group": "advanced", "widget": "text", "label": "Renderer weights (local folder)"},
    "crf": {"group": "advanced", "widget": "slider", "minimum": 0, "maximum": 51, "step": 1,
            "label": "Video quality (CRF, lower is better)"},
    "preset": {"group": "advanced", "widget": "dropdown",
               "choices": ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium",
                           "slow", "slower", "veryslow"], "label": "Encoder preset"},
    "max_duration": {"group": "advanced", "widget": "number", "minimum": 1,
                     "label": "Longest speech accepted (s)"},
    "max_pixels": {"group": "advanced", "widget": "number", "minimum": 1,
                   "label": "Largest photo accepted (pixels)"},
}


@dataclass(frozen=True)
class OptionSpec:
    """One option control: what the page draws for an :class:`AnimateOptions` field."""

    name: str                    # the AnimateOptions field
    type: type                   # int, float, str or bool (Optional[...] unwrapped)
    default: Any                 # AnimateOptions' default
    optional: bool               # None is a valid value (empty = the pipeline decides)
    group: str                   # a key of GROUPS
    widget: str
    label: str
    info: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    custom: bool = False         # a dropdown that also takes typed values
    lazy: bool = False           # its choices come from a function not yet called
    only_modes: tuple[str, ...] = ()   # a control drawn in one tab: the modes it serves

    def resolve_choices(self) -> tuple[Any, ...]:
        """The choices, calling the hint's function when they were left lazy."""
        if not self.lazy:
            return self.choices
        fn = CONTROL_HINTS[self.name]["choices"]
        return tuple(fn())

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes in which this control's value is used."""
        return self.only_modes or GROUP_MODES.get(self.group, MODES)

    def ui_default(self) -> Any:
        """The control's initial value (the pipeline's default, as the widget holds it)."""
        if self.widget == "checkboxes":
            return [r.strip() for r in str(self.default).split(",") if r.strip()]
        if self.default is None:
            return None if self.widget == "number" else ""
        return self.default


def label_for(name: str) -> str:
    """A readable label from a field name: ``head_motion_scale`` -> ``Head motion scale``."""
    text = name.replace("_", " ")
    return text[:1].upper() + text[1:]


def _field_types() -> list[tuple[str, type, Any, bool]]:
    from ..pipeline import AnimateOptions

    hints = typing.get_type_hints(AnimateOptions)
    out = []
    for f in fields(AnimateOptions):
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = type(None) in typing.get_args(tp)
        base = args[0] if args else tp
        out.append((f.name, base, f.default if f.default is not MISSING else None, optional))
    return out


def _page_help(text: str) -> str:
    """The command line's help in the page's words: ``--crop face`` -> ``crop face``."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", " "), text)


def _generic_widget(tp: type) -> str:
    return {bool: "checkbox", int: "number", float: "number"}.get(tp, "text")


def option_specs(*, remote: bool = False, lazy: bool = False) -> list[OptionSpec]:
    """One :class:`OptionSpec` per ``AnimateOptions`` field, in the dataclass's order.

    A field with two groups (``lang``: the speech language in the audio tabs, the text's
    language in the text tab) gives one spec per group. With ``remote=True`` the options a
    REST server keeps for itself (:data:`SERVER_ONLY`) are left out. With ``lazy=True``
    choices that need a module of the pipeline (languages, emotions, renderers) are not computed
    (``spec.lazy``; :meth:`OptionSpec.resolve_choices` computes them), so the page starts fast.
    """
    try:
        from ..cli import OPTION_HELP
    except ImportError:  # pragma: no cover - typer is a core dependency
        OPTION_HELP = {}
    specs: list[OptionSpec] = []
    for name, tp, default, optional in _field_types():
        if remote and name in SERVER_ONLY:
            continue
        hint = CONTROL_HINTS.get(name, {})
        choices = hint.get("choices", ())
        deferred = callable(choices) and lazy
        if callable(choices):
            choices = (default if default is not None else "",) if deferred else choices()
        groups = hint.get("group", "advanced")
        for group in (groups if isinstance(groups, tuple) else (groups,)):
            specs.append(OptionSpec(
                name=name, type=tp, default=default, optional=optional, group=group,
                widget=hint.get("widget", _generic_widget(tp)),
                label=hint.get("label", label_for(name)), info=_page_help(OPTION_HELP.get(name, "")),
                minimum=hint.get("minimum"), maximum=hint.get("maximum"), step=hint.get("step"),
                choices=tuple(choices), custom=bool(hint.get("custom", False)),
                lazy=deferred))
    return specs


def _convert(spec: OptionSpec, value: Any) -> Any:
    """A widget's value as the option's Python type (``None``: empty, the pipeline decides)."""
    if spec.widget == "checkboxes":
        return ",".join(str(v) for v in (value or []))
    if value is None or (isinstance(value, str) and not value.strip() and spec.type is not str):
        return None
    if spec.type is bool:
        return bool(value)
    if spec.type is int:
        value = float(value)
        return int(value) if value.is_integer() else value     # validation names a fraction
    if spec.type is float:
        return float(value)
    value = str(value).strip()
    return value if value or not spec.optional else None


def collect_options(specs: Iterable[OptionSpec], values: Iterable[Any], mode: str) -> dict[str, Any]:
    """The ``animate`` options from the controls' values, for ``mode``.

    Only the options whose control is used in ``mode`` and whose value differs from the
    pipeline's default are returned, so an untouched page renders exactly as
    ``echomimic animate`` with no options does. A value the pipeline would refuse (a fraction
    for an integer, an empty region list) is passed on for it to name the problem.
    """
    out: dict[str, Any] = {}
    for spec, value in zip(specs, values):
        if mode not in spec.modes:
            continue
        v = _convert(spec, value)
        if v is None and not spec.optional:
            continue                        # an emptied number box: keep the default
        if v == spec.default:
            continue
        out[spec.name] = v
    return out
