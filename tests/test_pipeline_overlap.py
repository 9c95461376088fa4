"""The offline pipeline renders while the recording is still being analysed.

For a recording that drives the lips (idle life the rest), :func:`echomimic.animate` analyses
the speech in blocks on a producer thread (:mod:`echomimic.motion.blocks`): the first frames
are rendered once the first block is ready. These tests check the overlap by the order of the
progress events, never by time, and that the motion equals the whole-clip path's.
"""

from __future__ import annotations

import numpy as np
import pytest

from echomimic import animate
from echomimic.motion import blocks

OPTS = dict(crop="face", size=128, fps=25)


def test_frames_are_rendered_before_the_analysis_has_finished(astronaut_png, speech_en,
                                                             tmp_path, monkeypatch):
    # the producer may run at most 1 s of frames ahead of the renderer: on a 6 s clip the
    # analysis can only finish after frames have been rendered, if the stages overlap
    monkeypatch.setattr(blocks, "AHEAD_S", 1.0)
    monkeypatch.setattr(blocks, "BLOCK_S", 0.5)
    events: list[tuple[str, float]] = []
    res = animate(astronaut_png, tmp_path / "o.mp4", audio=speech_en.path,
                  progress=lambda stage, f: events.append((stage, round(f, 4))), **OPTS)
    assert res.n_frames == round(speech_en.duration * 25)
    first_render = next(i for i, e in enumerate(events) if e[0] == "render")
    analysed = [i for i, e in enumerate(events) if e == ("analyze", 1.0)]
    assert len(analysed) == 1 and first_render < analysed[0], events[:40]
    partial = [f for s, f in events[:first_render] if s == "analyze" and 0 < f < 1]
    assert partial, "no analysis progress before the first frame"
    renders = [f for s, f in events[:analysed[0]] if s == "render"]
    assert renders and max(renders) < 1.0
    assert events[-1] == ("done", 1.0)


def test_blocks_give_the_whole_clip_motion(astronaut_png, speech_en, tmp_path, monkeypatch):
    a = animate(astronaut_png, tmp_path / "a.mp4", audio=speech_en.path,
                motion_out=tmp_path / "a.json", **OPTS)
    monkeypatch.setattr(blocks, "ENABLED", False)
    b = animate(astronaut_png, tmp_path / "b.mp4", audio=speech_en.path, **OPTS)
    assert a.motion.channels == b.motion.channels
    assert a.motion.meta == b.motion.meta
    assert a.n_frames == b.n_frames and a.speech_method == b.speech_method
    # equal up to one step of the saved precision (a rounding may fall the other way)
    assert np.max(np.abs(a.motion.values - b.motion.values)) <= 2e-6
    from echomimic import load_motion

    saved = load_motion(tmp_path / "a.json")
    np.testing.assert_array_equal(saved.values, a.motion.values)
    # the lips move with the speech
    jaw = a.motion.values[:, a.motion.channels.index("jawOpen")]
    assert jaw.max() > 0.2


def test_a_cancelled_job_stops_the_producer(astronaut_png, speech_en, tmp_path):
    import threading

    from echomimic.errors import Cancelled

    def progress(stage, f):
        if stage == "render" and f > 0.2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        animate(astronaut_png, tmp_path / "c.mp4", audio=speech_en.path, progress=progress,
                **OPTS)
    assert not any(t.name == "echomimic-speech" and t.is_alive() for t in threading.enumerate())
    assert not (tmp_path / "c.mp4").exists()


def test_frames_are_rendered_with_one_opencv_thread_and_the_setting_comes_back(
        astronaut_png, speech_en, tmp_path, monkeypatch):
    """OpenCV's workers (and the BLAS library's, which wait by spinning) would compete with the
    encoder thread for the same cores: a job renders with the thread count of
    ``ECHOMIMIC_OPENCV_THREADS`` (1 by default; 0 leaves the libraries' own), and the process's
    settings come back afterwards."""
    import cv2
    from threadpoolctl import threadpool_info, threadpool_limits

    from echomimic.render.warp import WarpRenderer

    def blas_by_library() -> dict[str, int]:
        return {i["filepath"]: i["num_threads"] for i in threadpool_info()
                if i["user_api"] == "blas"}

    seen: list[tuple[int, dict[str, int]]] = []
    render_into = WarpRenderer.render_into

    def spy(self, m, frame):
        seen.append((cv2.getNumThreads(), blas_by_library()))
        return render_into(self, m, frame)

    monkeypatch.setattr(WarpRenderer, "render_into", spy)
    before = cv2.getNumThreads()
    try:
        with threadpool_limits(limits=2, user_api="blas"):
            cv2.setNumThreads(3)
            libs = blas_by_library()
            animate(astronaut_png, tmp_path / "a.mp4", audio=speech_en.path, **OPTS)
            assert libs and seen
            assert all(n == 1 and set(b.values()) == {1} for n, b in seen)
            assert cv2.getNumThreads() == 3
            after = blas_by_library()
            assert {k: after[k] for k in libs} == libs
            seen.clear()
            monkeypatch.setenv("ECHOMIMIC_OPENCV_THREADS", "0")
            animate(astronaut_png, tmp_path / "b.mp4", audio=speech_en.path, **OPTS)
            assert seen and all(n == 3 and {k: b[k] for k in libs} == libs for n, b in seen)
    finally:
        cv2.setNumThreads(before)
