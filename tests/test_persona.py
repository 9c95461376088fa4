"""Personas: enrollment from a video, the .persona file (safe, bounded, versioned), and rendering
with the person's own mouth interiors.

The enrollment video is made here: the astronaut photo talking (synthesized speech), rendered by
the pipeline at 256x256.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import echomimic
from echomimic.errors import NoFaceFound, PersonaError, PersonaTooLarge
from echomimic.persona import (PERSONA_LIMITS, enroll, load_persona, persona_from_bytes,
                               persona_to_bytes, save_persona)
from echomimic.types import MotionTrack, Persona

TEXT = ("Hello there. I am talking for a while so that you can learn how my mouth moves, "
        "opening wide and closing again, for a few seconds.")


@pytest.fixture(scope="module")
def talking_clip(tmp_path_factory, astronaut_png) -> Path:
    """About seven seconds of the astronaut talking, 256x256, with its sound."""
    out = tmp_path_factory.mktemp("persona_clip") / "talk.mp4"
    res = echomimic.animate(astronaut_png, out, text=TEXT, lang="en", crop="face", size=256)
    assert res.duration >= 5.5, res.duration
    return out


@pytest.fixture(scope="module")
def persona(talking_clip) -> Persona:
    return enroll(talking_clip)


@pytest.fixture(scope="module")
def persona_file(tmp_path_factory, persona) -> Path:
    return save_persona(persona, tmp_path_factory.mktemp("persona_file") / "astronaut.persona")


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    from echomimic.media import Mp4Writer

    h, w = frames[0].shape[:2]
    with Mp4Writer(path, w, h, fps) as wr:
        for f in frames:
            wr.write(f)
    return path


def _assert_same(a: Persona, b: Persona) -> None:
    assert np.array_equal(a.atlas, b.atlas)
    for name in ("atlas_opening", "atlas_shape", "atlas_lip", "atlas_sharpness"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-5)
    for name in ("opening", "head_motion", "speech_fit", "source"):
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                if isinstance(x[k], float):
                    assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-9), (name, k)
                else:
                    assert x[k] == y[k], (name, k)
        else:
            assert x == y
    assert a.blink_rate == pytest.approx(b.blink_rate)
    np.testing.assert_allclose(a.lip_rgb, b.lip_rgb)
    assert a.schema == b.schema == "echomimic.persona/1"


# ------------------------------------------------------------------------------------------------
# enrollment
# ------------------------------------------------------------------------------------------------


def test_enrollment_learns_an_atlas_of_real_mouths(persona, talking_clip):
    assert persona.n_entries >= 3
    n, h, w, c = persona.atlas.shape
    from echomimic.persona.atlas import ATLAS_SIZE

    assert (w, h, c) == (*ATLAS_SIZE, 3) and persona.atlas.dtype == np.uint8
    # entries span the openings of the clip, from nearly closed to open
    assert persona.atlas_opening.min() < 0.1 < persona.atlas_opening.max()
    assert persona.opening["p5"] <= persona.opening["p50"] <= persona.opening["p95"]
    assert np.all(np.isfinite(persona.atlas_shape)) and np.all(persona.atlas_shape > 0.5)
    # the widest entry shows more of the interior: its middle is darker than the lips around it
    widest = persona.atlas[int(np.argmax(persona.atlas_opening))].astype(float)
    lip = np.asarray(persona.atlas_lip[int(np.argmax(persona.atlas_opening))])
    H, W = widest.shape[:2]
    assert widest[H // 3: 2 * H // 3, W // 4: 3 * W // 4].mean() < lip.mean()
    assert 0 <= persona.blink_rate <= 60
    assert set(persona.head_motion) == {"yaw_std", "pitch_std", "roll_std"}
    # the clip's mouth follows its own speech: the speech fit finds that
    assert persona.speech_fit is not None
    assert persona.speech_fit["r"] > 0.5 and persona.speech_fit["gain"] > 0.3
    assert persona.source["frames"] >= 125


def test_a_persona_round_trips_through_its_file(persona, persona_file):
    again = load_persona(persona_file)
    _assert_same(persona, again)
    _assert_same(persona, load_persona(persona_file.read_bytes()))
    with zipfile.ZipFile(persona_file) as z:
        names = set(z.namelist())
        doc = json.loads(z.read("persona.json"))
    assert "persona.json" in names and "stats.npz" in names
    assert {f"atlas/{k:03d}.png" for k in range(persona.n_entries)} <= names
    assert doc["schema"] == "echomimic.persona/1"


def test_enrollment_refuses_a_short_video(talking_clip):
    with pytest.raises(PersonaError, match="at least 5 s"):
        enroll(talking_clip, start=0.0, end=3.0)


def test_enrollment_refuses_a_video_without_a_face(tmp_path):
    y, x = np.mgrid[0:96, 0:128]
    frames = [np.stack([(x + 2 * i) % 256, y * 2, np.full_like(x, 90)], -1).astype(np.uint8)
              for i in range(150)]
    video = _write_video(tmp_path / "noface.mp4", frames)
    with pytest.raises(NoFaceFound):
        enroll(video)


# ------------------------------------------------------------------------------------------------
# bad persona files
# ------------------------------------------------------------------------------------------------


def _zip(members: dict[str, bytes], compress: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _members(good: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        return {n: z.read(n) for n in z.namelist()}


def bad_files(good: bytes) -> dict[str, tuple[bytes, type, str]]:
    """name -> (file bytes, error class, words in the message)."""
    m = _members(good)
    doc = json.loads(m["persona.json"])
    import pickle

    pickled_npz = io.BytesIO()
    np.savez(pickled_npz, opening=np.array([{"a": 1}], dtype=object))
    other = dict(doc, schema="echomimic.persona/99")
    return {
        "corrupt": (b"PK\x03\x04" + bytes(range(256)) * 8, PersonaError, "corrupt"),
        "not a zip": (b"hello, I am not a persona", PersonaError, "not a persona file"),
        "truncated": (good[: len(good) // 2], PersonaError, "corrupt or truncated"),
        "zip bomb": (_zip({**m, "atlas/000.png": b"\0" * (PERSONA_LIMITS["member_bytes"] + 10)}),
                     PersonaTooLarge, "limit"),
        "oversized": (good + b"\0" * PERSONA_LIMITS["file_bytes"], PersonaTooLarge, "limit"),
        "pickle member": (_zip({**m, "evil.pkl": pickle.dumps({"x": 1})}), PersonaError,
                          "unexpected member"),
        "pickled npz": (_zip({**m, "stats.npz": pickled_npz.getvalue()}), PersonaError,
                        "not a plain numeric NPZ"),
        "other schema": (_zip({**m, "persona.json": json.dumps(other).encode()}), PersonaError,
                         "unsupported persona schema"),
        "bad json": (_zip({**m, "persona.json": b"{not json"}), PersonaError, "not valid JSON"),
    }


def test_bad_persona_files_are_refused_with_one_clear_line(persona_file):
    good = persona_file.read_bytes()
    for name, (data, err, words) in bad_files(good).items():
        with pytest.raises(err) as info:
            persona_from_bytes(data)
        msg = str(info.value)
        assert words in msg, (name, msg)
        assert "\n" not in msg and len(msg) < 300, (name, msg)


def test_the_cli_refuses_a_bad_persona_with_exit_2(persona_file, astronaut_png, short_speech,
                                                   tmp_path):
    from echomimic.cli import app

    runner = CliRunner()
    good = persona_file.read_bytes()
    for name, (data, _err, words) in bad_files(good).items():
        if name == "oversized":
            continue                        # the same check as the zip bomb's, on a bigger file
        bad = tmp_path / f"{name.replace(' ', '_')}.persona"
        bad.write_bytes(data)
        out = tmp_path / "out.mp4"
        res = runner.invoke(app, ["animate", "-i", str(astronaut_png), "-a", str(short_speech.path),
                                  "-o", str(out), "--persona", str(bad), "-q"])
        assert res.exit_code == 2, (name, res.output)
        lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], (name, lines)
        assert "Traceback" not in res.output and not out.exists()
    res = runner.invoke(app, ["animate", "-i", str(astronaut_png), "-a", str(short_speech.path),
                              "-o", str(tmp_path / "o.mp4"), "--persona", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "persona file" in res.output


def test_the_cli_enrolls(talking_clip, tmp_path):
    from echomimic.cli import app

    out = tmp_path / "me.persona"
    res = CliRunner().invoke(app, ["enroll", str(talking_clip), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["atlas_entries"] == load_persona(out).n_entries >= 3
    res = CliRunner().invoke(app, ["enroll", str(talking_clip), "-o", str(tmp_path / "x.persona"),
                                   "--end", "2"])
    assert res.exit_code == 2 and "at least 5 s" in res.output


def test_the_api_refuses_a_bad_persona_before_accepting_the_job(persona_file, astronaut_png,
                                                                short_speech, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from echomimic.service.app import create_app
    from echomimic.service.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, auth=False, rate_limit=0, max_active_jobs=0))
    files = {"image": astronaut_png.read_bytes(), "audio": short_speech.path.read_bytes()}
    good = persona_file.read_bytes()
    with TestClient(app) as client:
        for name, (data, err, words) in bad_files(good).items():
            r = client.post("/api/v1/generate", files={**files, "persona": data})
            body = r.json()
            if name == "oversized":        # stopped by the upload limit before it is parsed
                assert r.status_code == 413 and body["code"] == "input_too_large", body
                continue
            assert r.status_code == err.http_status, (name, r.status_code, r.text)
            assert body["code"] == err.code and words in body["message"], (name, body)
        assert not list((tmp_path / "jobs").glob("*/input.*"))
        r = client.post("/api/v1/generate", files={**files, "persona": good})
        assert r.status_code == 202, r.text


# ------------------------------------------------------------------------------------------------
# rendering with a persona
# ------------------------------------------------------------------------------------------------


def _open_close(n: int = 40) -> MotionTrack:
    jaw = 0.5 * (1 - np.cos(np.linspace(0, 4 * np.pi, n))) * 0.8
    return MotionTrack(fps=25.0, channels=["jawOpen"], values=jaw[:, None].astype(np.float32))


def _frames(path: Path) -> np.ndarray:
    from echomimic.media.video import iter_video_frames

    return np.stack(list(iter_video_frames(path)))


def test_animate_with_a_persona_paints_its_mouths(persona_file, astronaut_png, tmp_path):
    """Same motion, same photo: only the inside of the mouth differs, and it differs where the
    mouth is open."""
    track = _open_close()
    a = echomimic.animate(astronaut_png, tmp_path / "plain.mp4", motion=track, crop="face",
                          size=256, crf=0, preset="ultrafast")
    b = echomimic.animate(astronaut_png, tmp_path / "persona.mp4", motion=track, crop="face",
                          size=256, crf=0, preset="ultrafast", persona=persona_file)
    fa, fb = _frames(a.output).astype(np.int16), _frames(b.output).astype(np.int16)
    assert fa.shape == fb.shape
    diff = np.abs(fa - fb).max(axis=-1)                      # (n, h, w)
    ys, xs = np.nonzero(diff.max(axis=0) > 12)
    assert len(ys) > 50                                      # the interiors differ
    # ... only around the mouth (lower-middle of the face crop)
    assert np.ptp(ys) < 256 * 0.25 and np.ptp(xs) < 256 * 0.35
    opened = np.argmax(track.values[:, 0])
    closed = np.argmin(track.values[:, 0])
    assert diff[opened].mean() > diff[closed].mean() + 0.05


def test_the_atlas_interior_cross_fades_instead_of_popping(persona):
    from echomimic.render.warp.atlas import EASE, AtlasInterior

    img = np.full((120, 160, 3), 170, np.uint8)
    lm = np.zeros((478, 3))
    from echomimic.persona.atlas import LOWER_INNER, LOWER_OUTER, UPPER_INNER, UPPER_OUTER

    xs = np.linspace(50, 110, 11)
    bump = np.sin(np.linspace(0, np.pi, 11))
    lm[UPPER_OUTER, 0], lm[UPPER_OUTER, 1] = xs, 60 - 6 * bump
    lm[LOWER_OUTER, 0], lm[LOWER_OUTER, 1] = xs, 60 + 8 * bump
    lm[UPPER_INNER, 0], lm[UPPER_INNER, 1] = xs, 60.0
    lm[LOWER_INNER, 0], lm[LOWER_INNER, 1] = xs, 60.0
    mouth = AtlasInterior(persona, img, lm)

    def paint(gap: float) -> np.ndarray:
        out = img.copy()
        mouth.paint(out, np.stack([xs, 60 - 0.3 * gap * bump], 1), np.stack([xs, 60 + 0.7 * gap * bump], 1))
        return out

    small = float(persona.atlas_opening.min()) * 60
    large = float(persona.atlas_opening.max()) * 60
    for _ in range(30):
        paint(small)
    w_small = mouth.weights.copy()
    paint(large)                    # a sudden jump: the weights move only part of the way
    target = mouth._target_weights(large / 60, 1.0)
    step = np.abs(mouth.weights - w_small).sum()
    assert step == pytest.approx(EASE * np.abs(target - w_small).sum(), rel=1e-6)
    for _ in range(30):
        last = paint(large)
    np.testing.assert_allclose(mouth.weights, target, atol=1e-3)
    # the interior is painted inside the lips only
    assert np.array_equal(last[:40], img[:40]) and np.array_equal(last[90:], img[90:])
    assert np.abs(last[60:66, 70:90].astype(int) - 170).mean() > 5


# ------------------------------------------------------------------------------------------------
# the web UI
# ------------------------------------------------------------------------------------------------


def test_the_ui_has_a_persona_upload_and_uses_it(persona_file, astronaut_png, short_speech,
                                                 tmp_path):
    gr = pytest.importorskip("gradio")
    from echomimic.ui.app import build_app, run_job
    from echomimic.ui.backend import Job, LocalBackend

    ids = {c["props"].get("elem_id") for c in build_app(LocalBackend()).get_config_file()["components"]}
    assert "persona-input" in ids
    small = {"crop": "face", "size": 128}
    job = Job(mode="audio", image=str(astronaut_png), audio=str(short_speech.path),
              options=small, persona=str(persona_file))
    assert job.drivers()["persona"] == str(persona_file)
    res = run_job(LocalBackend(tmp_path), job)
    assert res.video.is_file()
    bad = tmp_path / "bad.persona"
    bad.write_bytes(persona_file.read_bytes()[:300])
    with pytest.raises(gr.Error) as err:
        run_job(LocalBackend(tmp_path), Job(mode="audio", image=str(astronaut_png),
                                            audio=str(short_speech.path), options=small,
                                            persona=str(bad)))
    assert "persona file is corrupt" in err.value.message and "\n" not in err.value.message


def test_the_persona_shapes_speech_driven_motion(persona):
    """A reliable speech fit scales jawOpen (closed stays closed, no step); idle head motion
    takes the person's spread; video or motion-file heads are left alone."""
    import dataclasses

    from echomimic.persona import adapt_track

    n = 200
    t = np.linspace(0, 8, n)
    jaw = np.clip(np.sin(2 * np.pi * 0.7 * t), 0, None).astype(np.float32)
    yaw = (2.0 * np.sin(2 * np.pi * 0.2 * t)).astype(np.float32)     # std 1.41
    track = MotionTrack(fps=25.0, channels=["jawOpen", "yaw"], values=np.stack([jaw, yaw], 1))
    p = dataclasses.replace(persona, speech_fit={"gain": 0.5, "offset": 0.05, "r": 0.8,
                                                 "frames": 100.0},
                            head_motion={"yaw_std": 1.0, "pitch_std": 1.0, "roll_std": 1.0})
    out = adapt_track(track, p, lips_from_speech=True, head_from_idle=True)
    j2, y2 = out.values[:, 0], out.values[:, 1]
    assert np.all(j2[jaw == 0] == 0)                                  # closed stays closed
    assert j2.max() == pytest.approx(0.6 * 1.0 + 0.04, abs=0.02)      # 1 + 0.8 * (0.5 - 1)
    assert np.abs(np.diff(j2)).max() <= np.abs(np.diff(jaw)).max() + 1e-6
    assert np.std(y2) == pytest.approx(1.0, rel=0.05)
    assert out.meta["persona"]["jaw_gain"] == pytest.approx(0.6)
    kept = adapt_track(track, p, lips_from_speech=False, head_from_idle=False)
    assert np.array_equal(kept.values, track.values)
    weak = dataclasses.replace(p, speech_fit={"gain": 0.5, "offset": 0.05, "r": 0.1, "frames": 9.0})
    assert np.array_equal(adapt_track(track, weak, lips_from_speech=True,
                                      head_from_idle=False).values, track.values)


def test_atlas_entries_lose_the_band_of_lip_at_their_edges():
    """An entry cut a little on the lips (lip-coloured rows at its top and bottom) comes back
    without them; teeth under the lip (bright, not red) are not taken for lip."""
    from echomimic.persona.atlas import ATLAS_SIZE, trim_lip_band

    W, H = ATLAS_SIZE
    lip = np.array([180, 90, 90], np.uint8)
    entry = np.zeros((H, W, 3), np.uint8)
    entry[:] = (45, 20, 22)                                   # the dark inside
    entry[H // 8: H // 4] = (225, 220, 205)                   # teeth
    entry[: H // 8] = lip                                     # lip band on top
    entry[-H // 10:] = lip                                    # and at the bottom
    out = trim_lip_band(entry, lip.astype(np.float32))
    assert out.shape == entry.shape
    red = (out[..., 0].astype(int) - out[..., 1]) > 60
    assert red[:, W // 2].mean() < 0.03                       # (interpolated edge rows only)
    assert out[1, W // 2].tolist() == [225, 220, 205]         # teeth now start at the top
    # a mouth whose inside is as red as its lips is left as it is
    flat = np.zeros((H, W, 3), np.uint8)
    flat[:] = lip
    assert trim_lip_band(flat, lip.astype(np.float32)) is flat
