"""Text drives it: languages and voices, streaming TTS, transcript alignment, prompts, emotion.

Everything is made here: speech with espeak-ng, the astronaut photo from scikit-image. The prompt
actions are rendered with the warp renderer and measured on the frames with the face mesh.
"""

from __future__ import annotations

import numpy as np
import pytest

from echomimic.errors import AudioError, InvalidOption
from echomimic.types import Audio, MotionTrack, Phone

# ------------------------------------------------------------------------------------------------
# languages, voices, Japanese kana
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, lang", [
    ("Hello there, how are you today? I hope you are well.", "en"),
    ("你好，今天天气很好，我们一起去公园散步吧。", "zh"),
    ("你今日食咗飯未呀？我哋一齊去飲茶啦。", "yue"),
    ("今日は良い天気ですね。", "ja"),
    ("안녕하세요, 만나서 반갑습니다.", "ko"),
    ("Hola, ¿cómo estás? Me alegro mucho de verte por aquí.", "es"),
    ("Bonjour à tous, je suis très content de vous voir aujourd'hui.", "fr"),
    ("Guten Tag, wie geht es Ihnen? Ich freue mich sehr, Sie zu sehen.", "de"),
])
def test_detect_language(text, lang):
    from echomimic.speech.textlang import detect_language

    assert detect_language(text) == lang


def test_voice_map_and_unknown_code():
    from echomimic.speech.textlang import resolve_lang, voice_for

    assert voice_for("zh") == "cmn" and voice_for("zh-HK") == "yue" and voice_for("yue") == "yue"
    assert voice_for("ja") == "ja" and voice_for("de-AT") == "de" and voice_for("en") == "en-us"
    assert resolve_lang("Guten Tag, wie geht es Ihnen heute?", "auto") == "de"
    with pytest.raises(InvalidOption, match="unknown TTS language"):
        voice_for("xx")


def test_kanji_become_kana():
    from echomimic.speech.textlang import kanji_to_kana

    out = kanji_to_kana("今日は良い天気です")
    assert out == "こんにちはよいてんきです"
    assert kanji_to_kana("Hello, world") == "Hello, world"


def test_japanese_with_kanji_is_spoken_as_japanese():
    from echomimic.speech import synthesize

    _, phones = synthesize("今日は良い天気です", lang="ja")
    labels = [p.label for p in phones]
    # espeak-ng reads a bare kanji as "Chinese letter" in English: a language switch "(en)"
    assert not any(lab.startswith("(") for lab in labels), labels
    assert "t_s\\" in labels or "ts\\" in labels or "k" in labels
    _, auto = synthesize("今日は良い天気です", lang="auto")
    assert [p.label for p in auto] == labels


def test_split_sentences_keeps_every_character():
    from echomimic.speech.tts import split_sentences

    text = " ".join(f"Sentence number {i} is here." for i in range(30))
    chunks = split_sentences(text, max_chars=100)
    assert len(chunks) > 1 and all(len(c) <= 100 for c in chunks)
    assert all(c.endswith(".") for c in chunks)          # cut at sentence ends
    assert " ".join(chunks).split() == text.split()
    zh = "今天天气很好。" * 30
    zchunks = split_sentences(zh, max_chars=50)
    assert "".join(zchunks) == zh and all(c.endswith("。") for c in zchunks)
    assert split_sentences("Short one.") == ["Short one."]


def test_stream_chunks_join_into_synthesize():
    from echomimic.speech.tts import synthesize, synthesize_stream

    text = "The first sentence is here. The second one follows it. And a third one ends it."
    chunks = list(synthesize_stream(text, lang="en", max_chars=40))
    assert len(chunks) == 3
    assert [c.index for c in chunks] == [0, 1, 2]
    assert chunks[1].offset == pytest.approx(chunks[0].audio.duration)
    assert chunks[2].offset == pytest.approx(chunks[0].audio.duration + chunks[1].audio.duration)
    audio, phones = synthesize(text, lang="en", max_chars=40)
    # the same chunks, sample for sample (each utterance depends on its text only)
    np.testing.assert_array_equal(audio.samples, np.concatenate([c.audio.samples for c in chunks]))
    assert [p.label for p in phones] == [p.label for c in chunks for p in c.phones]
    # the phones of a later chunk are moved by its offset
    k = len(chunks[0].phones) + len(chunks[1].phones)
    assert phones[k].start == pytest.approx(chunks[2].phones[0].start + chunks[2].offset, abs=0.01)
    assert all(a.start <= b.start for a, b in zip(phones, phones[1:]))


def test_the_same_text_gives_the_same_audio_whatever_was_spoken_before():
    """espeak-ng carries the phase of its pitch flutter from one utterance to the next; every
    utterance starts from a freshly loaded library, so a clip does not depend on the process's
    history (a service worker renders a retried job identically)."""
    from echomimic.speech import synthesize

    first, p1 = synthesize("Hello there, how are you today?", lang="en")
    synthesize("Something else entirely, and rather longer than the first.", lang="en")
    synthesize("你好，今天天气很好。", lang="zh")
    again, p2 = synthesize("Hello there, how are you today?", lang="en")
    np.testing.assert_array_equal(first.samples, again.samples)
    assert p1 == p2


def test_volume_scales_the_audio():
    from echomimic.speech import synthesize

    loud, _ = synthesize("Hello there", lang="en", volume=150)
    soft, _ = synthesize("Hello there", lang="en", volume=50)
    ratio = np.sqrt(np.mean(loud.samples ** 2) / np.mean(soft.samples ** 2))
    assert ratio > 2.0
    with pytest.raises(InvalidOption, match="volume"):
        synthesize("Hello", volume=300)


# ------------------------------------------------------------------------------------------------
# transcript alignment
# ------------------------------------------------------------------------------------------------


def test_dtw_recovers_a_known_warp():
    from echomimic.speech.align import dtw_path

    rng = np.random.default_rng(0)
    y = np.cumsum(rng.standard_normal((300, 4)), axis=0)
    # x: y played with its first half slowed (each row twice) and its second half at speed
    idx = np.concatenate([np.repeat(np.arange(150), 2), np.arange(150, 300)])
    x = y[idx] + 0.01 * rng.standard_normal((len(idx), 4))
    for cells in (10**9, 20_000):                   # full, and coarse-to-fine in a band
        path = dtw_path(x, y, max_cells=cells)
        assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (len(x) - 1, 299)
        assert np.all(np.diff(path, axis=0) >= 0)
        err = np.abs(idx[path[:, 0]] - path[:, 1])
        assert np.median(err) <= 1 and err.max() <= 3


def _recording(text, voice, rate, pitch, stretch=1.0, noise=0.0):
    """A 'recording' whose phoneme timing is known: another voice, rate and pitch, slowed or
    sped up by resampling, padded with silence, noise added."""
    from scipy.signal import resample_poly

    from echomimic.speech import synthesize

    a, ph = synthesize(text, voice=voice, rate=rate, pitch=pitch)
    x = a.samples
    if stretch != 1.0:
        x = resample_poly(x, int(round(stretch * 100)), 100).astype(np.float32)
        ph = [Phone(p.start * stretch, p.end * stretch, p.label) for p in ph]
    pad = int(0.4 * a.sample_rate)
    x = np.concatenate([np.zeros(pad, np.float32), x, np.zeros(pad, np.float32)])
    ph = [Phone(p.start + 0.4, p.end + 0.4, p.label) for p in ph]
    if noise:
        x = x + noise * np.random.default_rng(1).standard_normal(len(x)).astype(np.float32)
    return Audio(x.astype(np.float32), a.sample_rate), ph


def _r(a, b):
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


@pytest.mark.parametrize("lang, text, voice, rate, pitch, stretch, noise", [
    ("en", "The quick brown fox jumps over the lazy dog. Please call me back soon.",
     "en-us+m3", 140, 30, 1.0, 0.0),
    ("zh", "今天天气很好，我们一起去公园散步吧。", "cmn+f4", 160, 40, 0.85, 0.02),
    ("ja", "今日は良い天気ですね。一緒に散歩に行きましょう。", "ja+klatt", 175, 50, 1.25, 0.01),
])
def test_transcript_beats_blind_analysis(lang, text, voice, rate, pitch, stretch, noise, measured):
    from echomimic.speech import analyze_speech, truth_curves
    from echomimic.speech.align import align_transcript

    audio, phones = _recording(text, voice, rate, pitch, stretch, noise)
    truth = truth_curves(phones, audio.duration, 0.01, scheme="espeak")["open"]
    blind = analyze_speech(audio, lang=lang)
    guided = align_transcript(audio, text, lang="auto")
    r_blind = _r(blind.articulation["open"], truth)
    r_guided = _r(guided.articulation["open"], truth)
    measured(f"transcript r(open) {lang}", f"{r_guided:.3f} (blind {r_blind:.3f})")
    assert guided.method == "transcript" and guided.lang == lang
    assert r_guided >= 0.85 and r_guided > r_blind + 0.03
    # phone starts land where the recording has them
    speech_ph = [(g, t) for g, t in zip(guided.phones, phones) if not t.label.startswith("_")]
    err = np.median([abs(g.start - t.start) for g, t in speech_ph])
    assert err < 0.03


def test_transcript_from_a_file_and_errors(tmp_path):
    from echomimic.speech.align import align_transcript, read_transcript

    f = tmp_path / "words.txt"
    f.write_text("\ufeffHello there,\nhow are you?\n", encoding="utf-8")
    assert read_transcript(str(f)) == "Hello there, how are you?"
    assert read_transcript("I read notes.txt every day") == "I read notes.txt every day"
    with pytest.raises(InvalidOption, match="does not exist"):
        read_transcript(str(tmp_path / "missing.txt"))
    with pytest.raises(InvalidOption, match="empty"):
        read_transcript("   ")
    silence = Audio(np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioError, match="no speech"):
        align_transcript(silence, "Hello there", lang="en")


# ------------------------------------------------------------------------------------------------
# prompts: parsing and timing
# ------------------------------------------------------------------------------------------------


def _peak_time(track: MotionTrack, channel: str) -> float:
    col = np.abs(track.get(channel) - (1.0 if channel == "scale" else 0.0))
    return float(np.argmax(col)) / track.fps


def test_prompt_timing_words():
    from echomimic.motion.prompt import parse_prompt

    d = 9.0
    res = parse_prompt("smiles, then nods twice; looks left at the end", duration=d, fps=25)
    names = [a.name for a in res.actions]
    assert names == ["smile", "nod", "look_left"] and not res.warnings
    smile, nod, look = res.actions
    assert smile.end <= nod.start and nod.count == 2
    assert look.start >= 2 * d / 3 and look.end <= d
    track = res.overlays[0]
    assert _peak_time(track, "mouthSmileLeft") < _peak_time(track, "pitch") < _peak_time(track, "yaw")
    # two nods: two separate maxima of pitch
    pitch = track.get("pitch")
    peaks = np.flatnonzero((pitch[1:-1] > pitch[:-2]) & (pitch[1:-1] >= pitch[2:]) & (pitch[1:-1] > 4))
    assert len(peaks) == 2
    # Chinese says the same
    zh = parse_prompt("先微笑，然后点头两次，最后向左看", duration=d, fps=25)
    assert [a.name for a in zh.actions] == names
    assert np.allclose(zh.overlays[0].values, track.values)


def test_prompt_at_the_start_and_together():
    from echomimic.motion.prompt import parse_prompt

    res = parse_prompt("微笑并点头", duration=6.0)
    smile, nod = res.actions
    assert smile.start == nod.start                      # together
    start = parse_prompt("raises eyebrows at the start", duration=6.0).actions[0]
    assert start.end <= 2.0
    at = parse_prompt("winks after 3 seconds", duration=6.0).actions[0]
    assert at.start == pytest.approx(3.0)


def test_prompt_while_speaking_follows_the_speech():
    from echomimic.motion.prompt import parse_prompt
    from echomimic.types import Speech

    n = 600
    act = np.zeros(n, np.float32)
    act[100:250] = 1
    act[400:520] = 1
    sp = Speech(duration=6.0, hop=0.01, activity=act, loudness=act, pitch=np.zeros(n, np.float32),
                articulation={})
    track = parse_prompt("smiles while speaking", duration=6.0, fps=25, speech=sp).overlays[0]
    smile = track.get("mouthSmileLeft")
    t = np.arange(track.n_frames) / 25
    assert smile[(t > 1.3) & (t < 2.2)].min() > 0.6          # speaking
    assert smile[(t > 3.0) & (t < 3.7)].max() < 0.1          # the pause between phrases


def test_unknown_phrases_warn_and_list_the_vocabulary():
    from echomimic.motion.prompt import parse_prompt

    res = parse_prompt("dances wildly and smiles", duration=4.0)
    assert [a.name for a in res.actions] == ["smile"]
    assert len(res.warnings) == 1 and "dances wildly" in res.warnings[0]
    assert "nod" in res.warnings[0] and "at the end" in res.warnings[0]
    none = parse_prompt("juggles", duration=4.0)
    assert not none.overlays and none.warnings
    with pytest.raises(InvalidOption):
        parse_prompt("  ", duration=4.0)


@pytest.mark.parametrize("prompt, emotion", [
    ("speaks cheerfully", "happy"), ("开心地说话", "happy"), ("talks sadly", "sad"),
    ("生气地说", "angry"), ("says it in a surprised voice", "surprised"),
])
def test_prompt_sets_the_emotion(prompt, emotion):
    from echomimic.motion.prompt import parse_prompt

    res = parse_prompt(prompt, duration=4.0)
    assert res.emotion == emotion and not res.warnings and not res.actions


# ------------------------------------------------------------------------------------------------
# emotion
# ------------------------------------------------------------------------------------------------


def test_emotion_overlay_and_head_energy():
    from echomimic.motion import mix_tracks
    from echomimic.motion.emotion import emotion_head_scale, emotion_overlay

    happy = emotion_overlay(50, 25, "happy", 1.0)
    half = emotion_overlay(50, 25, "happy", 0.5)
    assert happy.get("mouthSmileLeft").min() > 0.4
    assert np.allclose(half.get("mouthSmileLeft"), 0.5 * happy.get("mouthSmileLeft"))
    assert emotion_overlay(50, 25, "neutral", 1.0).channels == []
    sad = emotion_overlay(50, 25, "sad", 1.0)
    assert sad.get("browInnerUp").min() > 0.5 and sad.get("pitch").min() > 0
    mixed = mix_tracks(speech=None, base=None, overlays=[sad, emotion_overlay(50, 25, "neutral")],
                       n_frames=50, fps=25)
    assert mixed.get("mouthFrownLeft")[0] == pytest.approx(0.45)
    assert emotion_head_scale("sad", 1.0) < 1 < emotion_head_scale("angry", 1.0)
    assert emotion_head_scale("happy", 0.0) == 1.0
    with pytest.raises(InvalidOption, match="unknown emotion"):
        emotion_overlay(10, 25, "bored", 0.5)
    with pytest.raises(InvalidOption, match="between 0 and 1"):
        emotion_overlay(10, 25, "happy", 1.5)


# ------------------------------------------------------------------------------------------------
# prompts measured on rendered frames
# ------------------------------------------------------------------------------------------------

_FPS = 10.0
_DUR = 3.0


@pytest.fixture(scope="module")
def renderer(astronaut_rgb):
    from echomimic.analysis import analyze_face, prepare_portrait
    from echomimic.render.warp import WarpRenderer

    portrait = prepare_portrait(astronaut_rgb, analyze_face(astronaut_rgb), crop="face", size=512)
    return WarpRenderer(portrait)


def _iris_x(lm: np.ndarray) -> np.ndarray:
    """Horizontal iris position in eye widths from each eye's centre, mean of both eyes."""
    left = (lm[:, 468, 0] - (lm[:, 33, 0] + lm[:, 133, 0]) / 2) / np.abs(lm[:, 133, 0] - lm[:, 33, 0])
    right = (lm[:, 473, 0] - (lm[:, 362, 0] + lm[:, 263, 0]) / 2) / np.abs(lm[:, 263, 0] - lm[:, 362, 0])
    return (left + right) / 2


def _brow_height(tr) -> np.ndarray:
    lm = tr.landmarks
    return ((lm[:, 33, 1] + lm[:, 263, 1]) - (lm[:, 105, 1] + lm[:, 334, 1])) / 2 / tr.eye_dist


_MEASURES: dict = {}


def _render_prompt(renderer, prompt):
    """Frames of the prompt's overlay (nothing else moves), measured; frame 0 is at rest."""
    from echomimic.motion import mix_tracks
    from echomimic.motion.prompt import parse_prompt
    from echomimic.quality.measure import measure_frames

    res = parse_prompt(prompt, duration=_DUR, fps=_FPS)
    assert res.actions and not res.warnings, (prompt, res.warnings)
    n = int(_DUR * _FPS)
    track = mix_tracks(speech=None, base=None, overlays=res.overlays, n_frames=n, fps=_FPS)
    key = track.values.tobytes()
    if key not in _MEASURES:
        frames = [renderer.render({"yaw": 0.0})] + [renderer.render(track.frame(i)) for i in range(n)]
        _MEASURES[key] = measure_frames(frames, static_image_mode=True)
    return res, _MEASURES[key]


_ACTION_PROMPTS = [
    ("smile", "smiles", "微笑"),
    ("laugh", "laughs", "大笑"),
    ("nod", "nods", "点头"),
    ("shake", "shakes head", "摇头"),
    ("tilt_left", "tilts head to the left", "向左歪头"),
    ("look_left", "looks left", "向左看"),
    ("look_right", "looks right", "向右看"),
    ("look_up", "looks up", "向上看"),
    ("look_down", "looks down", "向下看"),
    ("raise_brows", "raises eyebrows", "扬眉"),
    ("frown", "frowns", "皱眉"),
    ("wink_right", "winks", "眨一只眼"),
    ("close_eyes", "closes eyes", "闭眼"),
    ("surprise", "looks surprised", "惊讶"),
]


@pytest.mark.parametrize("name, en, zh", _ACTION_PROMPTS, ids=[a[0] for a in _ACTION_PROMPTS])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_prompt_action_shows_on_the_face(renderer, name, en, zh, lang, measured):
    res, tr = _render_prompt(renderer, en if lang == "en" else zh)
    assert res.actions[0].name == name
    rest = {k: float(getattr(tr, k)[0]) for k in ("yaw", "pitch", "roll", "mouth_corner_y",
                                                     "eye_open_left", "eye_open_right", "lip_gap")}
    d = {k: getattr(tr, k)[1:] - rest[k] for k in rest}
    brow = _brow_height(tr)
    d["brow"] = brow[1:] - brow[0]
    iris = _iris_x(tr.landmarks)
    d["iris"] = iris[1:] - iris[0]
    assert tr.found.all()
    if name in ("smile", "laugh"):
        measured(f"prompt {name} ({lang}) corner rise", f"{d['mouth_corner_y'].max():.3f}")
        assert d["mouth_corner_y"].max() > 0.03
        if name == "laugh":
            assert d["lip_gap"].max() > 0.05
    elif name == "nod":
        measured(f"prompt nod ({lang}) pitch", f"{d['pitch'].max():.1f} deg")
        assert d["pitch"].max() > 4.0
    elif name == "shake":
        measured(f"prompt shake ({lang}) yaw", f"{d['yaw'].min():.1f}..{d['yaw'].max():.1f} deg")
        assert d["yaw"].max() > 4.0 and d["yaw"].min() < -4.0
    elif name == "tilt_left":
        assert d["roll"].min() < -3.0
    elif name in ("look_left", "look_right"):
        sign = -1 if name == "look_left" else 1
        k = int(np.argmax(sign * d["yaw"]))
        measured(f"prompt {name} ({lang}) yaw / iris", f"{d['yaw'][k]:.1f} deg / {d['iris'][k]:+.3f}")
        assert sign * d["yaw"][k] > 6.0
        assert sign * d["iris"][k] > 0.01          # the eyes turn the same way
    elif name in ("look_up", "look_down"):
        sign = -1 if name == "look_up" else 1
        measured(f"prompt {name} ({lang}) pitch", f"{(sign * d['pitch']).max():.1f} deg")
        assert (sign * d["pitch"]).max() > 4.0
    elif name == "raise_brows":
        measured(f"prompt raise_brows ({lang}) brow", f"{d['brow'].max():.3f}")
        assert d["brow"].max() > 0.02
    elif name == "frown":
        assert d["brow"].min() < -0.005 and d["mouth_corner_y"].min() < -0.02
    elif name == "wink_right":
        # the eye on the image's right closes, the other stays open
        k = int(np.argmin(d["eye_open_right"]))
        measured(f"prompt wink ({lang}) eyes", f"{tr.eye_open_right[1 + k]:.3f} / {tr.eye_open_left[1 + k]:.3f}")
        assert tr.eye_open_right[1 + k] < 0.5 * rest["eye_open_right"]
        assert tr.eye_open_left[1 + k] > 0.75 * rest["eye_open_left"]
    elif name == "close_eyes":
        assert tr.eye_open_right[1:].min() < 0.5 * rest["eye_open_right"]
        assert tr.eye_open_left[1:].min() < 0.5 * rest["eye_open_left"]
    elif name == "surprise":
        assert d["brow"].max() > 0.02 and d["lip_gap"].max() > 0.05


def test_prompt_at_the_end_happens_in_the_last_third(renderer):
    _, tr = _render_prompt(renderer, "looks left at the end")
    yaw = tr.yaw[1:] - tr.yaw[0]
    t = np.arange(len(yaw)) / _FPS
    moving = t[yaw < -3.0]
    assert moving.size and moving.min() >= 2 * _DUR / 3 - 1e-6


@pytest.mark.parametrize("prompt, unknown", [
    ("smiles, then nods twice; blorf at the end", "blorf"),
    ("smiles and dances wildly", "dances"),
    ("微笑并跳舞", "跳舞"),
])
def test_unknown_words_beside_known_ones_are_warned(prompt, unknown):
    from echomimic.motion.prompt import parse_prompt

    res = parse_prompt(prompt, duration=3.0, fps=25.0)
    assert res.actions, "the known actions are still applied"
    assert any(unknown in w for w in res.warnings), res.warnings
