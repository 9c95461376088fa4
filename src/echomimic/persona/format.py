"""The persona file (``NAME.persona``): a zip of JSON, PNG and NPZ, never a pickle.

Layout (every member is required unless marked optional; no other member is accepted)::

    persona.json        {"schema": "echomimic.persona/1", ...}  (figures and the atlas index)
    atlas/000.png       mouth interiors in the canonical mouth frame, RGB PNG, one per entry
    atlas/001.png ...
    stats.npz           (optional) numeric arrays, read with ``allow_pickle=False``

Reading is bounded before anything is decompressed or decoded: the file size, the number of
members, each member's declared and actual decompressed size and their sum, and the PNG
dimensions. A file that breaks a limit, is not a zip, is truncated, fails its CRC, has another
schema, or holds anything else (a pickle, a ``.npy`` with objects, an unexpected member) raises
:class:`~echomimic.errors.PersonaError` with one line saying what is wrong.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PersonaError, PersonaTooLarge
from ..types import PERSONA_SCHEMA_ID, Persona

__all__ = ["save_persona", "load_persona", "persona_to_bytes", "persona_from_bytes",
           "PERSONA_LIMITS", "SCHEMA_ID"]

SCHEMA_ID = PERSONA_SCHEMA_ID

#: Limits checked on read (bytes unless said otherwise).
PERSONA_LIMITS: dict[str, int] = {
    "file_bytes": 16 * 1024 * 1024,        # the .persona file itself
    "members": 200,                        # zip members
    "member_bytes": 4 * 1024 * 1024,       # one member, decompressed
    "total_bytes": 32 * 1024 * 1024,       # all members, decompressed
    "entries": 128,                        # atlas entries
    "entry_side": 512,                     # largest side of an atlas image (pixels)
}

_ATLAS_RE = re.compile(r"^atlas/(\d{3})\.png$")
_JSON = "persona.json"
_STATS = "stats.npz"


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------


def _png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 always encodes uint8 RGB
        raise PersonaError("could not encode an atlas image as PNG")
    return buf.tobytes()


def _floats(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _floats(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_floats(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def persona_to_bytes(persona: Persona) -> bytes:
    """The persona file's bytes."""
    n = persona.n_entries
    if n > PERSONA_LIMITS["entries"]:
        raise PersonaTooLarge(f"a persona holds at most {PERSONA_LIMITS['entries']} atlas "
                              f"entries, this one has {n}")
    entries = []
    for k in range(n):
        entries.append({
            "file": f"atlas/{k:03d}.png",
            "opening": float(persona.atlas_opening[k]),
            "shape": float(persona.atlas_shape[k]),
            "lip_rgb": [float(x) for x in persona.atlas_lip[k]],
            "sharpness": float(persona.atlas_sharpness[k]),
        })
    doc = {
        "schema": SCHEMA_ID,
        "atlas": {"width": int(persona.atlas.shape[2]) if n else 0,
                  "height": int(persona.atlas.shape[1]) if n else 0,
                  "frame": "u: left to right inner-lip corner; t: upper (0) to lower (1) inner lip",
                  "entries": entries},
        "opening": persona.opening,
        "blink_rate": persona.blink_rate,
        "head_motion": persona.head_motion,
        "speech_fit": persona.speech_fit,
        "lip_rgb": list(persona.lip_rgb),
        "source": persona.source,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(_JSON, json.dumps(_floats(doc), indent=1, ensure_ascii=False))
        for k in range(n):
            # PNG is compressed already: stored, not deflated again
            z.writestr(zipfile.ZipInfo(f"atlas/{k:03d}.png", date_time=(2020, 1, 1, 0, 0, 0)),
                       _png(persona.atlas[k]), compress_type=zipfile.ZIP_STORED)
        stats = io.BytesIO()
        np.savez_compressed(stats, opening=np.asarray(persona.atlas_opening, np.float32),
                            shape=np.asarray(persona.atlas_shape, np.float32))
        z.writestr(_STATS, stats.getvalue())
    return buf.getvalue()


def save_persona(persona: Persona, path: str | os.PathLike) -> Path:
    """Write ``persona`` to ``path`` (atomically: a temporary file renamed into place)."""
    out = Path(path)
    if not out.parent.exists():
        raise PersonaError(f"the output folder {str(out.parent)!r} does not exist")
    data = persona_to_bytes(persona)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, budget: list[int]) -> bytes:
    """A member's bytes, never decompressing past the limits (headers are not trusted)."""
    cap = min(PERSONA_LIMITS["member_bytes"], budget[0])
    out = bytearray()
    try:
        with z.open(info) as f:
            while True:
                chunk = f.read(65536)
                if not chunk:
                    break
                out += chunk
                if len(out) > cap:
                    raise PersonaTooLarge(
                        f"persona member {info.filename!r} decompresses to more than "
                        f"{cap} bytes (a persona's members stay under "
                        f"{PERSONA_LIMITS['member_bytes']} bytes, "
                        f"{PERSONA_LIMITS['total_bytes']} in all)")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            NotImplementedError) as exc:
        if isinstance(exc, PersonaError):
            raise
        raise PersonaError(f"the persona file is corrupt: member {info.filename!r}: "
                           f"{exc}".rstrip(": ")) from None
    budget[0] -= len(out)
    return bytes(out)


def _decode_png(data: bytes, name: str) -> np.ndarray:
    import cv2

    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 24:
        raise PersonaError(f"persona member {name!r} is not a PNG image")
    w = int.from_bytes(data[16:20], "big")
    h = int.from_bytes(data[20:24], "big")
    side = PERSONA_LIMITS["entry_side"]
    if not (1 <= w <= side and 1 <= h <= side):
        raise PersonaTooLarge(f"persona atlas image {name!r} is {w}x{h}, over the limit of "
                              f"{side}x{side}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.shape[:2] != (h, w):
        raise PersonaError(f"persona atlas image {name!r} is corrupt")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _num(doc: dict, key: str, where: str) -> float:
    v = doc.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(float(v)):
        raise PersonaError(f"persona.json: {where}{key} must be a number, got {v!r}")
    return float(v)


def _figures(doc: Any, keys: tuple[str, ...], where: str) -> dict[str, float]:
    if not isinstance(doc, dict):
        raise PersonaError(f"persona.json: {where} must be an object")
    return {k: _num(doc, k, f"{where}.") for k in keys}


def persona_from_bytes(data: bytes) -> Persona:
    """Parse a persona file's bytes (see the module's limits)."""
    data = bytes(data)
    if len(data) > PERSONA_LIMITS["file_bytes"]:
        raise PersonaTooLarge(f"the persona file is {len(data)} bytes, over the limit of "
                              f"{PERSONA_LIMITS['file_bytes']}")
    if len(data) < 22 or not data.startswith(b"PK"):
        raise PersonaError("not a persona file (a .persona is a zip made by `echomimic enroll`)")
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise PersonaError(f"the persona file is corrupt or truncated ({exc})") from None
    with z:
        infos = z.infolist()
        if len(infos) > PERSONA_LIMITS["members"]:
            raise PersonaTooLarge(f"the persona file has {len(infos)} members, over the limit "
                                  f"of {PERSONA_LIMITS['members']}")
        names: dict[str, zipfile.ZipInfo] = {}
        declared = 0
        for info in infos:
            name = info.filename
            if name in names:
                raise PersonaError(f"the persona file has member {name!r} twice")
            if not (name in (_JSON, _STATS) or _ATLAS_RE.match(name)):
                raise PersonaError(f"the persona file has an unexpected member {name!r} (only "
                                   f"persona.json, atlas/NNN.png and stats.npz are allowed)")
            if info.flag_bits & 0x1:
                raise PersonaError(f"persona member {name!r} is encrypted")
            declared += int(info.file_size)
            if info.file_size > PERSONA_LIMITS["member_bytes"]:
                raise PersonaTooLarge(f"persona member {name!r} declares {info.file_size} bytes, "
                                      f"over the limit of {PERSONA_LIMITS['member_bytes']}")
            names[name] = info
        if declared > PERSONA_LIMITS["total_bytes"]:
            raise PersonaTooLarge(f"the persona file decompresses to {declared} bytes, over the "
                                  f"limit of {PERSONA_LIMITS['total_bytes']}")
        if _JSON not in names:
            raise PersonaError("the persona file has no persona.json")
        budget = [PERSONA_LIMITS["total_bytes"]]
        try:
            doc = json.loads(_read_member(z, names[_JSON], budget).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PersonaError(f"persona.json is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise PersonaError("persona.json must be a JSON object")
        schema = doc.get("schema")
        if schema != SCHEMA_ID:
            raise PersonaError(f"unsupported persona schema {schema!r} (this version reads "
                               f"{SCHEMA_ID!r})")
        atlas = doc.get("atlas")
        if not isinstance(atlas, dict) or not isinstance(atlas.get("entries"), list):
            raise PersonaError("persona.json: atlas.entries must be a list")
        entries = atlas["entries"]
        if not entries:
            raise PersonaError("the persona's mouth atlas is empty")
        if len(entries) > PERSONA_LIMITS["entries"]:
            raise PersonaTooLarge(f"the persona has {len(entries)} atlas entries, over the limit "
                                  f"of {PERSONA_LIMITS['entries']}")
        imgs, opening, shape, lip, sharp = [], [], [], [], []
        for k, e in enumerate(entries):
            if not isinstance(e, dict):
                raise PersonaError(f"persona.json: atlas entry {k} must be an object")
            f = e.get("file")
            if not isinstance(f, str) or f not in names or not _ATLAS_RE.match(f):
                raise PersonaError(f"persona.json: atlas entry {k} names a missing image {f!r}")
            img = _decode_png(_read_member(z, names[f], budget), f)
            if imgs and img.shape != imgs[0].shape:
                raise PersonaError(f"persona atlas image {f!r} is {img.shape[1]}x{img.shape[0]}, "
                                   f"the others {imgs[0].shape[1]}x{imgs[0].shape[0]}")
            imgs.append(img)
            where = f"atlas entry {k}: "
            opening.append(_num(e, "opening", where))
            shape.append(_num(e, "shape", where))
            sharp.append(_num(e, "sharpness", where))
            rgb = e.get("lip_rgb")
            if (not isinstance(rgb, list) or len(rgb) != 3
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                               and math.isfinite(float(x)) for x in rgb)):
                raise PersonaError(f"persona.json: {where}lip_rgb must be three numbers")
            lip.append([float(x) for x in rgb])
        if _STATS in names:
            raw = _read_member(z, names[_STATS], budget)
            try:
                with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                    for key in npz.files:
                        arr = npz[key]
                        if arr.dtype.kind not in "biuf":
                            raise ValueError(f"array {key!r} is not numeric")
            except PersonaError:
                raise
            except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
                raise PersonaError(f"persona member 'stats.npz' is not a plain numeric NPZ "
                                   f"({type(exc).__name__}: {exc})") from None
        blink = doc.get("blink_rate")
        if blink is not None:
            blink = _num(doc, "blink_rate", "")
        fit = doc.get("speech_fit")
        if fit is not None:
            fit = _figures(fit, ("gain", "offset", "r", "frames"), "speech_fit")
        lip_rgb = doc.get("lip_rgb", [0, 0, 0])
        if not isinstance(lip_rgb, list) or len(lip_rgb) != 3:
            raise PersonaError("persona.json: lip_rgb must be three numbers")
        src = doc.get("source", {})
        if not isinstance(src, dict):
            raise PersonaError("persona.json: source must be an object")
        return Persona(
            atlas=np.stack(imgs).astype(np.uint8),
            atlas_opening=np.asarray(opening, np.float32),
            atlas_shape=np.asarray(shape, np.float32),
            atlas_lip=np.asarray(lip, np.float32),
            atlas_sharpness=np.asarray(sharp, np.float32),
            opening=_figures(doc.get("opening"), ("p5", "p50", "p95", "max"), "opening"),
            blink_rate=blink,
            head_motion=_figures(doc.get("head_motion"), ("yaw_std", "pitch_std", "roll_std"),
                                 "head_motion"),
            speech_fit=fit,
            lip_rgb=tuple(float(x) for x in lip_rgb),  # type: ignore[arg-type]
            source=src,
        )


def load_persona(src: Any) -> Persona:
    """A :class:`~echomimic.types.Persona` from a path, bytes or a Persona (returned as is)."""
    if isinstance(src, Persona):
        return src
    if isinstance(src, (bytes, bytearray, memoryview)):
        return persona_from_bytes(bytes(src))
    try:
        path = Path(os.fspath(src))
    except TypeError:
        raise PersonaError(f"a persona is a .persona file path, its bytes or a Persona, not "
                           f"{type(src).__name__}") from None
    if not path.is_file():
        raise PersonaError(f"persona file not found: {str(path)!r}")
    size = path.stat().st_size
    if size > PERSONA_LIMITS["file_bytes"]:
        raise PersonaTooLarge(f"the persona file {path.name!r} is {size} bytes, over the limit "
                              f"of {PERSONA_LIMITS['file_bytes']}")
    return persona_from_bytes(path.read_bytes())
