"""The web UI's option controls, generated from the option table (:mod:`echomimic.options`).

Every option of the table shown on the ``ui`` front becomes one :class:`OptionSpec`: its name,
type, default, limits, choices and help come from the table, and the entry's ``ui`` hints say
how it is drawn (where it sits on the page, the kind of widget, a slider's step, a label). An
option added to the table appears on the page on its own ("Advanced options" unless its hints
say otherwise). :data:`SUGGESTIONS` adds the lists a few free-text options are offered from
(languages, voices, renderers).

This module does not import Gradio: the page is built by :mod:`echomimic.ui.app`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from ..options import OPTIONS, options_for

__all__ = ["OptionSpec", "SUGGESTIONS", "GROUPS", "MODES", "SERVER_ONLY", "option_specs",
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
SERVER_ONLY: frozenset[str] = frozenset(o.name for o in OPTIONS) - frozenset(
    o.name for o in options_for("rest"))


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


#: Values offered for options that accept more than a fixed list (a function returning the
#: list, called when the page is built: it needs modules of the pipeline).
SUGGESTIONS: dict[str, Any] = {"lang": _languages, "voice": _voices, "renderer": _renderers}


@dataclass(frozen=True)
class OptionSpec:
    """One option control: what the page draws for an option of the table."""

    name: str                    # the option's name
    type: type                   # int, float, str or bool
    default: Any                 # the table's default
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
        return tuple(SUGGESTIONS[self.name]())

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


def _page_help(text: str) -> str:
    """The command line's help in the page's words: ``--crop face`` -> ``crop face``."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", " "), text)


def _generic_widget(tp: type) -> str:
    return {bool: "checkbox", int: "number", float: "number"}.get(tp, "text")


def option_specs(*, remote: bool = False, lazy: bool = False) -> list[OptionSpec]:
    """One :class:`OptionSpec` per option of the table shown on the ``ui`` front, in its order.

    An option with two groups (``lang``: the speech language in the audio tabs, the text's
    language in the text tab) gives one spec per group. With ``remote=True`` the options a
    REST server keeps for itself (:data:`SERVER_ONLY`) are left out. With ``lazy=True``
    suggestions that need a module of the pipeline (languages, voices, renderers) are not
    computed (``spec.lazy``; :meth:`OptionSpec.resolve_choices` computes them), so the page
    starts fast.
    """
    specs: list[OptionSpec] = []
    for opt in options_for("ui"):
        if remote and opt.name in SERVER_ONLY:
            continue
        hint = opt.ui
        default = opt.default
        suggest = SUGGESTIONS.get(opt.name) if opt.suggestions or not opt.choices else None
        deferred = suggest is not None and lazy
        if suggest is not None:
            choices = (default if default is not None else "",) if deferred else suggest()
        else:
            choices = opt.choices
        widget = hint.get("widget", _generic_widget(opt.type))
        if choices and widget in ("number", "text"):
            widget = "dropdown"
        groups = hint.get("group", "advanced")
        for group in (groups if isinstance(groups, tuple) else (groups,)):
            specs.append(OptionSpec(
                name=opt.name, type=opt.type, default=default, optional=opt.optional,
                group=group, widget=widget, label=hint.get("label", label_for(opt.name)),
                info=_page_help(opt.help), minimum=opt.minimum, maximum=opt.maximum,
                step=hint.get("step"), choices=tuple(choices),
                custom=bool(hint.get("custom", suggest is not None)), lazy=deferred))
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
