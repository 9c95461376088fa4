"""Tests of the warp renderer on single frames (no audio, no encoding).

Each frame is measured with the face mesh (:mod:`echomimic.quality`) and compared with the
renderer's rest image; outside the renderer's ``dilated_mask`` every frame must equal the photo
bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from echomimic.types import NEUTRAL
from echomimic.quality import FaceMeasurer, FaceTracks

#: A blink must bring the measured eye openness under this share of the open eye's (the same
#: criterion the end-to-end blink test uses on whole clips).
BLINK_RATIO = 0.4
#: jawOpen 0.6 must open the lips by more than this (inner-lip gap over eye distance).
JAW_GAP_GAIN = 0.15


@pytest.fixture(scope="module")
def portrait(astronaut_rgb):
    from echomimic.analysis import analyze_face, prepare_portrait

    rgb = np.array(astronaut_rgb)
    return prepare_portrait(rgb, analyze_face(rgb), crop="none")


@pytest.fixture(scope="module")
def renderer(portrait):
    from echomimic.render.warp.renderer import WarpRenderer

    return WarpRenderer(portrait)


@pytest.fixture(scope="module")
def face_renderer(astronaut_rgb):
    """The same photo cropped to the face at 512x512 (eyes ~140 px apart), where the face mesh
    resolves a closed lid; uncropped the astronaut's eyes are ~60 px apart and a closed lid's
    lash line is only 2-3 px, at the limit of what the mesh can tell from a slit."""
    from echomimic.analysis import analyze_face, prepare_portrait
    from echomimic.render.warp.renderer import WarpRenderer

    rgb = np.array(astronaut_rgb)
    return WarpRenderer(prepare_portrait(rgb, analyze_face(rgb), crop="face", size=512))


@pytest.fixture(scope="module")
def rest_image(renderer) -> np.ndarray:
    """The photo with the renderer's rest region (e.g. an open mouth closed) pasted in where
    the frame may change."""
    x0, y0, x1, y1 = renderer.roi
    rest = np.array(renderer.photo)
    inside = renderer.dilated_mask[y0:y1, x0:x1, None]
    np.copyto(rest[y0:y1, x0:x1], renderer.rest_roi, where=inside)
    return rest


@pytest.fixture(scope="module")
def measure():
    """``measure(frame) -> FaceTracks`` (one row), the face mesh in static mode."""
    with FaceMeasurer(static_image_mode=True) as m:
        def one(frame: np.ndarray) -> FaceTracks:
            tracks = m.measure_frames([frame])
            assert tracks.found[0], "no face found in the rendered frame"
            return tracks

        yield one


def _eye_open(t: FaceTracks) -> float:
    return float(0.5 * (t.eye_open_left[0] + t.eye_open_right[0]))


def _check_frame(frame: np.ndarray, renderer, photo: np.ndarray) -> None:
    """uint8 of the photo's shape, and bit-identical to the photo outside the dilated mask."""
    assert frame.dtype == np.uint8
    assert frame.shape == photo.shape
    outside = ~renderer.dilated_mask
    assert outside.any(), "the dilated mask covers the whole frame"
    diff = np.abs(frame[outside].astype(np.int16) - photo[outside].astype(np.int16))
    assert int(diff.max()) == 0, (
        f"{int(np.count_nonzero(diff.max(axis=1)))} pixels outside the dilated mask changed "
        f"(max difference {int(diff.max())})")


def test_dilated_mask_is_full_frame_and_leaves_background(renderer, portrait, measured):
    mask = renderer.dilated_mask
    assert mask.dtype == bool and mask.shape == portrait.image.shape[:2]
    share_outside = float((~mask).mean())
    measured("share outside dilated mask", share_outside)
    assert 0.0 < share_outside < 1.0
    # the face itself is inside the mask
    lm = np.round(portrait.landmarks[:, :2]).astype(int)
    assert mask[lm[:, 1], lm[:, 0]].all()


def test_zero_motion_is_the_rest_image(renderer, rest_image, portrait):
    for motion in ({}, dict(NEUTRAL), {"jawOpen": 0.0, "yaw": 0.0, "eyeBlinkLeft": 0.0}):
        frame = renderer.render(motion)
        _check_frame(frame, renderer, portrait.image)
        np.testing.assert_array_equal(frame, rest_image)


def test_render_is_deterministic(renderer):
    m = {"jawOpen": 0.4, "yaw": 5.0, "eyeBlinkLeft": 0.5, "mouthPucker": 0.3, "breath": 0.5}
    np.testing.assert_array_equal(renderer.render(m), renderer.render(m))


def test_jaw_open_opens_the_lips(renderer, portrait, measure, measured):
    closed = measure(renderer.render({"jawOpen": 0.0})).lip_gap[0]
    frame = renderer.render({"jawOpen": 0.6})
    _check_frame(frame, renderer, portrait.image)
    opened = measure(frame).lip_gap[0]
    measured("lip gap jawOpen=0", float(closed))
    measured("lip gap jawOpen=0.6", float(opened))
    assert opened - closed > JAW_GAP_GAIN, (
        f"jawOpen 0.6 opened the lips by {opened - closed:.3f} (gap {closed:.3f} -> "
        f"{opened:.3f}); expected more than {JAW_GAP_GAIN}")


def test_blink_closes_both_eyes(face_renderer, measure, measured):
    renderer = face_renderer
    rest = measure(renderer.render({}))
    open_ = _eye_open(rest)
    frame = renderer.render({"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0})
    _check_frame(frame, renderer, renderer.photo)
    t = measure(frame)
    shut = _eye_open(t)
    measured("eye openness open", open_)
    measured("eye openness blink=1", shut)
    measured("blink ratio", shut / open_)
    assert open_ > 0.2, f"the rest frame's eyes measure only {open_:.3f} open"
    assert shut < BLINK_RATIO * open_, (
        f"eyeBlink=1 leaves the eyes {shut:.3f} open ({shut / open_:.0%} of {open_:.3f}); "
        f"expected under {BLINK_RATIO:.0%}")
    for name in ("eye_open_left", "eye_open_right"):
        side, side_open = getattr(t, name)[0], getattr(rest, name)[0]
        assert side < BLINK_RATIO * side_open, f"{name}: {side:.3f} of {side_open:.3f} open"


def test_one_eye_blink_leaves_the_other_open(renderer, measure):
    open_ = measure(renderer.render({}))
    # eyeBlinkLeft is the subject's left eye: on the image's right
    t = measure(renderer.render({"eyeBlinkLeft": 1.0}))
    assert t.eye_open_right[0] < t.eye_open_left[0]
    assert t.eye_open_left[0] > 0.8 * open_.eye_open_left[0]


@pytest.mark.parametrize("sign", [1, -1])
def test_yaw_turns_the_head(renderer, portrait, measure, measured, sign):
    rest_yaw = measure(renderer.render({})).yaw[0]
    frame = renderer.render({"yaw": 10.0 * sign})
    _check_frame(frame, renderer, portrait.image)
    yaw = measure(frame).yaw[0]
    measured(f"measured yaw for yaw={10 * sign:+d} (rest {rest_yaw:.2f})", float(yaw))
    assert sign * yaw > 0, f"yaw={10 * sign:+d} measured {yaw:.2f} degrees"
    assert sign * (yaw - rest_yaw) > 4.0


def test_every_channel_keeps_the_background(renderer, portrait):
    """Strong values of every kind of channel: the frame changes inside, never outside."""
    photo = portrait.image
    cases = [
        {"pitch": 10.0}, {"roll": 10.0}, {"tx": 0.2, "ty": -0.2}, {"scale": 1.2},
        {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0}, {"mouthPucker": 1.0},
        {"browInnerUp": 1.0}, {"breath": 1.0}, {"eyeLookOutLeft": 1.0, "eyeLookInRight": 1.0},
        {"yaw": 20.0, "pitch": -10.0, "jawOpen": 1.0},
    ]
    rest = renderer.render({})
    for motion in cases:
        frame = renderer.render(motion)
        _check_frame(frame, renderer, photo)
        assert not np.array_equal(frame, rest), f"{motion} changed nothing"


def test_frames_equal_the_photo_outside_the_changing_box(renderer, portrait):
    """changing_box bounds every pixel a frame changes (the encoder converts only that box and
    reuses the photo's picture for the rest)."""
    photo = portrait.image
    x0, y0, x1, y1 = renderer.changing_box()
    h, w = photo.shape[:2]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert (x1 - x0) * (y1 - y0) < h * w              # the uncropped astronaut: a part only
    buf = photo.copy()
    for motion in ({"yaw": 20.0, "pitch": -10.0, "jawOpen": 1.0}, {"tx": 0.2, "ty": -0.2},
                   {"scale": 1.2, "breath": 1.0}, {"eyeBlinkLeft": 1.0, "roll": 10.0}):
        frame = renderer.render_into(motion, buf)
        outside = frame.copy()
        outside[y0:y1, x0:x1] = photo[y0:y1, x0:x1]
        assert np.array_equal(outside, photo), motion
        assert not np.array_equal(frame[y0:y1, x0:x1], photo[y0:y1, x0:x1])
