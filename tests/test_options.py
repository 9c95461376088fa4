"""The one option table (echomimic.options) and the fronts made from it.

Nothing here is written per front by hand: every option of the table is looked up in the real
``echomimic animate --help``, in the REST API's OpenAPI schema and validation, and in the web
UI's controls, with the same default and limits. A second group of tests reads the fronts'
sources and checks that they import only public names of echomimic, and that no stage imports
the evaluation suite or a front.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from echomimic.errors import InvalidOption
from echomimic.options import (OPTIONS, AnimateOptions, check_value, cli_flag, limits_text, option,
                               options_for)

SRC = Path(__file__).resolve().parent.parent / "src" / "echomimic"


def _shown_default(default):
    return f"{default:g}" if isinstance(default, float) else str(default)


# ------------------------------------------------------------------------------------------------
# the table itself
# ------------------------------------------------------------------------------------------------


def test_animate_options_are_the_table():
    assert [f.name for f in fields(AnimateOptions)] == [o.name for o in OPTIONS]
    defaults = AnimateOptions()
    for o in OPTIONS:
        assert getattr(defaults, o.name) == o.default, o.name
        assert o.help and o.fronts, o.name
        if o.default is not None:
            assert isinstance(o.default, o.type), o.name
            check_value(o, o.default)                 # every default is inside its limits
        else:
            assert o.optional, o.name
    defaults.validate()


def test_emotion_choices_are_the_motion_stage_ones():
    from echomimic.motion.emotion import EMOTIONS

    assert option("emotion").choices == tuple(EMOTIONS)


def _outside(o):
    """Values just outside an option's limits (and the limits themselves, which are inside)."""
    step = 1 if o.type is int else 0.01
    bad, good = [], []
    if o.minimum is not None:
        bad.append(o.type(o.minimum - step))
        good.append(o.type(o.minimum))
    if o.maximum is not None:
        bad.append(o.type(o.maximum + step))
        good.append(o.type(o.maximum))
    if o.strict_choices:
        bad.append("no-such-" + o.name)
        good.extend(o.choices)
    return bad, good


@pytest.mark.parametrize("opt", OPTIONS, ids=[o.name for o in OPTIONS])
def test_the_pipeline_enforces_the_table_limits(opt):
    bad, good = _outside(opt)
    for value in good:
        AnimateOptions.from_kwargs(**{opt.name: value})
    for value in bad:
        with pytest.raises(InvalidOption, match=opt.name if opt.name != "emotion" else "emotion"):
            AnimateOptions.from_kwargs(**{opt.name: value})


def test_unknown_option_is_refused():
    with pytest.raises(InvalidOption, match="unknown option"):
        AnimateOptions.from_kwargs(colour="red")


# ------------------------------------------------------------------------------------------------
# the command line: `echomimic animate --help`
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def animate_help() -> dict[str, str]:
    """``echomimic animate --help`` as printed, one row per option (first flag -> row text)."""
    env = dict(os.environ, TERMINAL_WIDTH="400", COLUMNS="400", NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-m", "echomimic", "animate", "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^[│|]\s*\*?\s*(--[a-z][a-z-]*)", line)
        if m:
            rows[m.group(1)] = " ".join(line.strip("│| ").split())
    assert "--image" in rows and "--fps" in rows, proc.stdout
    return rows


def test_every_cli_option_is_in_animate_help_with_its_default_and_limits(animate_help):
    shown = options_for("cli")
    assert {o.name for o in shown} == {o.name for o in OPTIONS if "cli" in o.fronts}
    for o in shown:
        flag = cli_flag(o).split("/")[0]
        row = animate_help.get(flag)
        assert row is not None, f"{flag} is not in `echomimic animate --help`"
        assert o.help.split()[0] in row, (o.name, row)
        limits = limits_text(o)
        if limits:
            assert f"({limits})" in row, (o.name, row)
        if o.default is None:
            assert "[default:" not in row, (o.name, row)
        else:
            assert f"[default: ({_shown_default(o.default)})]" in row, (o.name, row)


# ------------------------------------------------------------------------------------------------
# the REST API: OpenAPI schema and validation
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(tmp_path_factory) -> dict:
    pytest.importorskip("fastapi", reason="the service needs its extra")
    from fastapi.testclient import TestClient

    from echomimic.service.app import create_app
    from echomimic.service.settings import Settings

    data = tmp_path_factory.mktemp("svc")
    settings = Settings.from_env().with_(data_dir=data, auth=False)
    with TestClient(create_app(settings)) as client:
        res = client.get("/openapi.json")
        assert res.status_code == 200
        return res.json()


def test_every_rest_option_is_in_the_openapi_schema_with_its_default_and_limits(openapi):
    body = openapi["paths"]["/api/v1/generate"]["post"]["requestBody"]["content"]
    for ctype in ("application/json", "multipart/form-data"):
        props = body[ctype]["schema"]["properties"]
        for o in OPTIONS:
            if "rest" not in o.fronts:
                assert o.name not in props, f"{o.name} is the server's, not a client's"
                continue
            p = props[o.name]
            assert p.get("default") == o.default, o.name
            assert p.get("minimum") == o.minimum and p.get("maximum") == o.maximum, o.name
            if o.strict_choices and not o.multiple:
                assert p["enum"] == list(o.choices), o.name
            kind = {bool: "boolean", int: "integer", float: "number", str: "string"}[o.type]
            assert kind in (p["type"] if isinstance(p["type"], list) else [p["type"]]), o.name


@pytest.mark.parametrize("opt", options_for("rest"), ids=[o.name for o in options_for("rest")])
def test_rest_validation_follows_the_table(opt):
    pytest.importorskip("fastapi", reason="the service needs its extra")
    from echomimic.service.app import build_params

    bad, good = _outside(opt)
    for value in good:
        params = build_params({opt.name: str(value) if not isinstance(value, bool) else value},
                              {"image", "audio"})
        assert params["options"][opt.name] == value
    for value in bad:
        with pytest.raises(InvalidOption):
            build_params({opt.name: str(value)}, {"image", "audio"})


def test_server_only_options_are_refused_from_clients():
    pytest.importorskip("fastapi", reason="the service needs its extra")
    from echomimic.service.app import build_params

    for o in OPTIONS:
        if "rest" not in o.fronts:
            with pytest.raises(InvalidOption, match="unknown field"):
                build_params({o.name: "1"}, {"image", "audio"})


# ------------------------------------------------------------------------------------------------
# the web UI
# ------------------------------------------------------------------------------------------------


def test_every_ui_option_is_a_control_with_its_default_and_limits():
    from echomimic.ui.options import SERVER_ONLY, option_specs

    specs = option_specs()
    assert {s.name for s in specs} == {o.name for o in options_for("ui")}
    for s in specs:
        o = option(s.name)
        assert s.default == o.default and s.type is o.type and s.optional == o.optional, s.name
        assert (s.minimum, s.maximum) == (o.minimum, o.maximum), s.name
        if o.strict_choices:
            assert s.choices == o.choices, s.name
        assert s.info.split()[0] == o.help.split()[0], s.name
    remote = {s.name for s in option_specs(remote=True)}
    assert remote == {o.name for o in options_for("ui") if "rest" in o.fronts}
    assert SERVER_ONLY == {o.name for o in OPTIONS if "rest" not in o.fronts}


def test_the_page_draws_the_table_limits():
    pytest.importorskip("gradio", reason="the web UI needs its extra")
    from echomimic.ui.app import build_app
    from echomimic.ui.backend import LocalBackend

    config = build_app(LocalBackend()).get_config_file()
    by_name: dict[str, list[dict]] = {}
    for c in config["components"]:
        elem = c["props"].get("elem_id") or ""
        if elem.startswith("opt-"):
            by_name.setdefault(elem.rsplit("-", 1)[-1], []).append(c)
    for o in options_for("ui"):
        assert o.name in by_name, f"no control for {o.name}"
        for c in by_name[o.name]:
            props = c["props"]
            if c["type"] in ("slider", "number"):
                assert props.get("minimum") == o.minimum, o.name
                assert props.get("maximum") == o.maximum, o.name
                assert props.get("value") == o.default, o.name
            elif c["type"] in ("radio", "dropdown") and o.strict_choices:
                values = [ch[1] if isinstance(ch, (list, tuple)) else ch
                          for ch in props["choices"]]
                assert values == list(o.choices) and props["value"] == o.default, o.name
            elif c["type"] == "checkboxgroup":
                values = [ch[1] if isinstance(ch, (list, tuple)) else ch
                          for ch in props["choices"]]
                assert values == list(o.choices), o.name
                assert ",".join(props["value"]) == o.default, o.name
            elif c["type"] == "checkbox":
                assert props["value"] is o.default, o.name


# ------------------------------------------------------------------------------------------------
# the fronts import only public names; no circles; stages do not import fronts or the eval suite
# ------------------------------------------------------------------------------------------------

FRONT_FILES = sorted([*(SRC / "cli").glob("*.py"), *(SRC / "service").glob("*.py"),
                      *(SRC / "ui").glob("*.py")])
STAGES = ("analysis", "media", "motion", "render", "speech")


def _module_of(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path):
    """``(module imported, names imported, node)`` of every import in a file (relative resolved),
    and the local names bound to echomimic modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_of(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, [a.name for a in node.names], node))
        elif isinstance(node, ast.Import):
            for a in node.names:
                out.append((a.name, [], node))
    return tree, out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _front_package(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1] in ("cli", "service", "ui") else mod


def _is_cli(mod: str) -> bool:
    return mod == "echomimic.cli" or mod.startswith("echomimic.cli.")


@pytest.mark.parametrize("path", FRONT_FILES, ids=[str(p.relative_to(SRC)) for p in FRONT_FILES])
def test_fronts_import_only_public_names(path):
    tree, imports = _imports(path)
    here = _module_of(path)
    own = _front_package(here)
    module_names: set[str] = set()
    problems = []
    for mod, names, node in imports:
        if not mod.startswith("echomimic"):
            continue
        inside = mod == own or mod.startswith(own + ".")     # a front's own modules
        if not inside and any(_private(p) for p in mod.split(".")):
            problems.append(f"line {node.lineno}: imports the private module {mod}")
        for n in names:
            if not inside and _private(n):
                problems.append(f"line {node.lineno}: imports {mod}.{n}")
            if (mod + "." + n).startswith("echomimic"):
                module_names.add(n)                          # may be a module: check attributes
        if mod.startswith("echomimic.ui") and not here.startswith("echomimic.ui") \
                and not _is_cli(here):
            problems.append(f"line {node.lineno}: {here} imports the UI")
        if here.startswith("echomimic.ui") and _is_cli(mod):
            problems.append(f"line {node.lineno}: the UI imports the command line")
        if here.startswith("echomimic.service") and _is_cli(mod):
            problems.append(f"line {node.lineno}: the service imports the command line")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in module_names):
            problems.append(f"line {node.lineno}: uses {node.value.id}.{node.attr}")
    assert not problems, f"{path.relative_to(SRC)}: " + "; ".join(problems)


STAGE_FILES = sorted(p for s in STAGES for p in (SRC / s).rglob("*.py"))


@pytest.mark.parametrize("path", STAGE_FILES, ids=[str(p.relative_to(SRC)) for p in STAGE_FILES])
def test_stages_do_not_import_fronts_or_the_evaluation_suite(path):
    """A stage never depends on a front, on the evaluation set or on the tools fitting its data
    (the face measurements of ``quality.measure``, shared with video driving, are allowed)."""
    _, imports = _imports(path)
    for mod, _names, node in imports:
        for banned in ("echomimic.quality.evalset", "echomimic.quality.evaluate",
                       "echomimic.quality.acoustic_fit", "echomimic.cli", "echomimic.service",
                       "echomimic.ui"):
            assert not (mod == banned or mod.startswith(banned + ".")), \
                f"{path.relative_to(SRC)} line {node.lineno} imports {mod}"


def test_the_check_finds_a_private_import(tmp_path, monkeypatch):
    """The import check itself: a front that reaches into a stage's private names is caught."""
    bad = SRC / "ui" / "_probe_for_test.py"
    bad.write_text("from ..analysis import face\nfrom ..speech.acoustic import _BLOCK\n"
                   "with face._lock:\n    pass\n", encoding="utf-8")
    try:
        with pytest.raises(AssertionError) as err:
            test_fronts_import_only_public_names(bad)
        assert "_BLOCK" in str(err.value) and "face._lock" in str(err.value)
    finally:
        bad.unlink()
