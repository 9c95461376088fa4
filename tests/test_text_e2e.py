"""Text drives the mouth end to end: spoken text in each listed language, rendered, and the
mouth measured with face mesh on the output frames against the truth curve that the phonetic
table makes of espeak-ng's own phoneme timing (the same method as benchmarks/text_sync.py)."""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = {
    "en": "Hello there, how are you today? I am fine, thank you very much.",
    "zh": "你好，今天天气很好。我们一起去公园散步吧。",
    "yue": "你今日食咗飯未呀？我哋一齊去飲茶啦。",
    "ja": "今日は良い天気ですね。一緒に公園へ散歩に行きましょう。",   # kanji: read as Japanese
    "es": "Hola, ¿cómo estás? Me alegro mucho de verte por aquí.",
    "fr": "Bonjour, comment allez-vous? Je suis très content de vous voir.",
    "de": "Guten Tag, wie geht es Ihnen? Ich freue mich sehr, Sie zu sehen.",
}
MIN_R = 0.85


@pytest.fixture(scope="module")
def renderer(astronaut_rgb):
    from echomimic.analysis import analyze_face, prepare_portrait
    from echomimic.render.warp import WarpRenderer

    rgb = np.array(astronaut_rgb)
    return WarpRenderer(prepare_portrait(rgb, analyze_face(rgb), crop="face", size=512))


@pytest.mark.slow
@pytest.mark.parametrize("lang", list(TEXTS))
def test_spoken_text_moves_the_mouth_with_its_phonemes(lang, renderer, measured):
    from echomimic.pipeline import AnimateOptions, drive, load_speech
    from echomimic.quality.measure import measure_frames
    from echomimic.quality.metrics import best_lag_correlation
    from echomimic.speech import truth_curves

    opts = AnimateOptions(lang=lang)
    speech, _ = load_speech(text=TEXTS[lang], opts=opts)
    assert speech.method == "tts-events"
    if lang == "ja":
        # kanji are converted to kana: no phoneme is spoken in English ("Chinese letter")
        assert not any(p.label.startswith("(en") for p in speech.phones)
    n = int(round(speech.duration * opts.fps))
    track = drive(speech=speech, motion=None, n_frames=n, opts=opts)
    frames = [renderer.render(track.frame(i)) for i in range(n)]
    gap = measure_frames(frames).lip_gap
    tc = truth_curves(speech.phones, speech.duration, 0.01, scheme="espeak")["open"]
    edges = np.round(np.arange(n + 1) / opts.fps / 0.01).astype(int)
    truth = np.array([tc[a:max(b, a + 1)].mean() if a < len(tc) else 0.0
                      for a, b in zip(edges[:-1], edges[1:])])
    r, lag = best_lag_correlation(gap, truth, 3)
    measured(f"[{lang}] text: r(lip gap, phoneme truth) / lag", f"{r:.3f} / {lag}")
    assert abs(lag) <= 1, f"the mouth is {lag} frames off the sound"
    assert r >= MIN_R, f"{lang}: r = {r:.3f} < {MIN_R}"
