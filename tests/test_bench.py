"""`echomimic bench --real`: the real-recording case runs end to end and reports its figures.

No timing is asserted (speed belongs in benchmarks); the tests check that every figure is there,
is consistent with the others, and that the recording is made from the media folder's files (or
from synthesized speech when there is none).
"""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
from typer.testing import CliRunner

from echomimic import bench
from echomimic.cli import app

runner = CliRunner()


def _wav_seconds(path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / float(w.getframerate())


@pytest.fixture(scope="module")
def media_folder(tmp_path_factory, short_speech):
    """A media folder with two recordings at different rates (the short phrase at its own rate
    and resampled to 16 kHz), as the real media folder mixes 24 and 44.1 kHz files."""
    from echomimic.media import load_audio
    from echomimic.speech import write_wav

    root = tmp_path_factory.mktemp("media")
    (root / "audio").mkdir()
    (root / "audio" / "a.wav").write_bytes(short_speech.path.read_bytes())
    write_wav(root / "audio" / "b.wav", load_audio(short_speech.path, sample_rate=16000))
    (root / "audio" / "notes.txt").write_text("not audio")
    return root


def test_recording_joins_the_media_files_to_length(media_folder, short_speech, tmp_path):
    path, source = bench.make_recording(2 * short_speech.duration + 1.0, tmp_path / "r.wav",
                                        media_folder)
    assert "2 recordings" in source and "repeated" in source
    assert _wav_seconds(path) == pytest.approx(2 * short_speech.duration + 1.0, abs=0.01)
    with wave.open(str(path)) as w:
        assert w.getframerate() == bench.RECORDING_RATE and w.getnchannels() == 1


def test_recording_falls_back_to_synthesized_speech(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "find_media_audio", lambda media=None: None)
    path, source = bench.make_recording(1.5, tmp_path / "r.wav")
    assert source.startswith("synthesized speech")
    assert _wav_seconds(path) == pytest.approx(1.5, abs=0.01)


def test_media_folder_without_recordings_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["bench", "--real", "--media", str(tmp_path), "--seconds", "1",
                              "--sizes", "96"])
    assert res.exit_code == 2
    assert "no recordings" in res.output


def test_bench_real_reports_every_figure_per_run_and_size(media_folder):
    res = runner.invoke(app, ["bench", "--real", "--media", str(media_folder), "--seconds",
                              "1.5", "--sizes", "96", "--runs", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["real_recording"] is True and "2 recordings" in out["source"]
    assert out["seconds"] == 1.5 and out["machine"]["cores"] >= 1
    (case,) = out["cases"]
    assert (case["size"], case["width"], case["height"]) == ("96", 96, 96)
    assert len(case["runs"]) == 2
    for run in case["runs"]:
        assert run["n_frames"] == round(1.5 * 25)
        assert 0 < run["first_frame_seconds"] < run["wall_seconds"]
        assert run["realtime_factor"] == pytest.approx(run["audio_seconds"] / run["wall_seconds"])
        assert run["peak_rss_mb"] > 10 and run["cpu_seconds"] > 0
        for key, _ in bench.STAGES:
            assert key in run["ms_per_frame"]
        assert run["ms_per_frame"]["render"] > 0 and run["ms_per_frame"]["encode"] > 0
    summary = case["summary"]
    for name in ("wall_seconds", "realtime_factor", "first_frame_seconds", "peak_rss_mb"):
        s = summary[name]
        values = sorted(r[name] for r in case["runs"])
        assert s["min"] == values[0] and s["max"] == values[-1]
        assert s["min"] <= s["median"] <= s["max"]
    assert set(summary["ms_per_frame"]) == {k for k, _ in bench.STAGES}


def test_bench_real_table_names_the_recording_and_the_figures(media_folder):
    res = runner.invoke(app, ["bench", "--real", "--media", str(media_folder), "--seconds",
                              "1", "--sizes", "96"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    for label in ("wall (s)", "real-time factor", "first frame to encoder (s)", "peak RSS (MB)",
                  "render (ms/frame)", "encode (ms/frame)", "2 recordings"):
        assert label in text, label
