"""Portrait analysis: detection on crops, several faces, the content-hash cache, frame geometry."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from echomimic.analysis import analyze_cached, analyze_face, prepare_portrait
from echomimic.analysis import cache as cache_mod
from echomimic.errors import InvalidOption, NoFaceFound


def _two_faces(astronaut_rgb) -> np.ndarray:
    """A wide canvas with the astronaut large on the left and small on the right (a face about
    80 px wide, the smallest the engine promises to find)."""
    big = np.array(astronaut_rgb)
    small = cv2.resize(big, (400, 400), interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 1024, 3), 128, np.uint8)
    canvas[:, :512] = big
    canvas[56:456, 580:980] = small
    return canvas


def test_face_mesh_points_fall_on_the_face(astronaut_rgb):
    fa = analyze_face(np.array(astronaut_rgb))
    assert fa.landmarks.shape == (478, 3)
    x0, y0, x1, y1 = fa.face_box
    inside = ((fa.landmarks[:, 0] > x0 - 10) & (fa.landmarks[:, 0] < x1 + 10)
              & (fa.landmarks[:, 1] > y0 - 40) & (fa.landmarks[:, 1] < y1 + 10))
    assert inside.mean() > 0.95
    # the person mask covers the face and leaves the top corners (background) out
    m = fa.person_mask
    cx, cy = fa.landmarks[1, :2].astype(int)
    assert m[cy, cx] > 200 and m[5, 5] < 50 and m[5, -5] < 50


def test_largest_face_first_and_face_index(astronaut_rgb):
    img = _two_faces(astronaut_rgb)
    fa0 = analyze_face(img)
    fa1 = analyze_face(img, face_index=1)
    assert len(fa0.face_boxes) == 2
    (a0, _, a1, _), (b0, _, b1, _) = fa0.face_boxes
    assert a1 - a0 > b1 - b0                      # largest first
    assert fa0.landmarks[1, 0] < 512 < fa1.landmarks[1, 0]
    with pytest.raises(InvalidOption, match="out of range"):
        analyze_face(img, face_index=2)


def test_no_face_is_a_clear_error():
    rng = np.random.default_rng(0)
    noise = (rng.random((300, 300, 3)) * 255).astype(np.uint8)
    with pytest.raises(NoFaceFound, match="no face"):
        analyze_face(noise)


def test_cache_skips_analysis_the_second_time(astronaut_rgb, tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOMIMIC_CACHE_DIR", str(tmp_path))
    rgb = np.array(astronaut_rgb)
    calls = []
    real = analyze_face

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr("echomimic.analysis.face.analyze_face", counting)
    first = analyze_cached(rgb, content_hash="abc123", face_index=0)
    second = analyze_cached(rgb, content_hash="abc123", face_index=0)
    assert len(calls) == 1
    assert second.meta.get("cached") is True
    np.testing.assert_allclose(second.landmarks, first.landmarks)
    np.testing.assert_array_equal(second.person_mask, first.person_mask)
    files = os.listdir(tmp_path / "analysis")
    assert len(files) == 1 and files[0].endswith(".npz")
    # a corrupt entry is ignored, not an error
    (tmp_path / "analysis" / files[0]).write_bytes(b"not a zip")
    assert cache_mod.load("abc123", 0) is None
    analyze_cached(rgb, content_hash="abc123", face_index=0)
    assert len(calls) == 2


def test_frame_geometry(astronaut_rgb):
    rgb = np.array(astronaut_rgb)
    fa = analyze_face(rgb)
    p = prepare_portrait(rgb, fa, crop="face", size=256)
    assert p.image.shape == (256, 256, 3)
    # the face is centred horizontally and mapped with the image
    assert abs(p.landmarks[1, 0] - 128) < 40
    p2 = prepare_portrait(rgb, fa, crop="none", max_side=300)
    assert max(p2.image.shape[:2]) <= 300 and p2.image.shape[0] % 2 == 0
    np.testing.assert_allclose(p2.landmarks[:, :2], fa.landmarks[:, :2] * p2.image.shape[1] / 512,
                               atol=1.0)
    with pytest.raises(InvalidOption):
        prepare_portrait(rgb, fa, crop="square")
