"""Tests of the speech stage: TTS, activity, phonetic table, analysis."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from scipy.signal import resample_poly

from echomimic.errors import InvalidOption
from echomimic.speech import analyze_speech, articulation_for, synthesize, truth_curves, write_wav
from echomimic.speech.activity import speech_activity
from echomimic.speech.phonetics import ARPABET, is_pause, shape_sequence
from echomimic.types import ARTICULATION_KEYS, Audio

EN = "Please call Stella and ask her to bring these things with her from the store."
ZH = "我今天早上去公园跑步了，这本书非常有意思。"


def _to16k(audio: Audio) -> np.ndarray:
    return resample_poly(audio.samples, 320, 441).astype(np.float32)


@pytest.fixture(scope="module")
def en_speech():
    return synthesize(EN, voice="en-us+m1", rate=165)


# --- TTS -------------------------------------------------------------------------------------

def test_tts_duration_and_events_in_order(en_speech):
    audio, phones = en_speech
    assert audio.sample_rate == 22050 and audio.samples.dtype == np.float32
    assert 2.5 < audio.duration < 8.0                # ~15 words at 165 wpm
    assert np.abs(audio.samples).max() > 0.05
    assert len(phones) > 30
    starts = [p.start for p in phones]
    assert starts == sorted(starts)
    assert all(0 <= p.start <= p.end <= audio.duration + 1e-6 for p in phones)
    labels = [p.label for p in phones]
    assert any(lab.startswith("s") for lab in labels) and any("b" == lab for lab in labels)


@pytest.mark.parametrize("text,lang", [(ZH, "zh"), ("こんにちは、げんきですか", "ja")])
def test_tts_other_languages(text, lang):
    audio, phones = synthesize(text, lang=lang)
    assert audio.duration > 1.0
    speech = [p for p in phones if not is_pause(p.label)]
    assert len(speech) > 8
    assert not any(p.label.startswith("(") for p in speech[:4])  # read natively, not spelled


def test_tts_bad_options(tmp_path):
    with pytest.raises(InvalidOption):
        synthesize("hello", lang="klingon")
    with pytest.raises(InvalidOption):
        synthesize("   ")
    with pytest.raises(InvalidOption):
        synthesize("hello", rate=5)


def test_write_wav_roundtrip(tmp_path, en_speech):
    audio, _ = en_speech
    path = write_wav(tmp_path / "a.wav", audio)
    with wave.open(str(path)) as w:
        assert w.getframerate() == 22050 and w.getsampwidth() == 2 and w.getnchannels() == 1
        assert w.getnframes() == len(audio.samples)


# --- activity --------------------------------------------------------------------------------

def test_activity_silence_and_noise():
    rng = np.random.default_rng(0)
    silence = np.zeros(16000 * 2, np.float32)
    act, _ = speech_activity(silence, 160)
    assert act.shape == (200,) and act.max() == 0.0
    noise = (rng.standard_normal(16000 * 2) * 0.003).astype(np.float32)
    act, _ = speech_activity(noise, 160)
    assert act.mean() < 0.05


def test_activity_finds_inserted_pauses(en_speech):
    audio, _ = en_speech
    x = _to16k(audio)
    n = len(x)
    a, b = x[: n // 2], x[n // 2:]
    # cut at a low-level point near the middle so the pause lands between sounds
    gap = np.zeros(int(0.6 * 16000), np.float32)
    y = np.concatenate([np.zeros(8000, np.float32), a, gap, b, np.zeros(8000, np.float32)])
    act, _ = speech_activity(y, 160)
    on = act >= 0.5
    assert not on[:40].any() and not on[-40:].any()
    g0, g1 = (8000 + len(a)) // 160, (8000 + len(a) + len(gap)) // 160
    assert not on[g0 + 3: g1 - 3].any()                  # the pause is found ...
    runs = np.diff(np.concatenate([[0], (~on).astype(int), [0]]))
    starts, ends = np.flatnonzero(runs == 1), np.flatnonzero(runs == -1)
    lengths = {(s, e): e - s for s, e in zip(starts, ends) if s <= g0 + 3 and e >= g1 - 3}
    assert lengths and 0.55 <= max(lengths.values()) * 0.01 <= 1.2   # ... with its length
    # inside words it is speech
    mid = on[(8000 + len(a) // 4) // 160: (8000 + len(a) // 2) // 160]
    assert mid.mean() > 0.8


# --- phonetic table --------------------------------------------------------------------------

def test_table_covers_arpabet_and_test_sentences():
    for ph in ARPABET:
        art = articulation_for(ph, "arpabet")
        assert set(art) == set(ARTICULATION_KEYS)
        assert all(0.0 <= v <= 1.0 for v in art.values())
        assert any(v > 0 for v in art.values())
    for text, lang in ((EN, "en"), (ZH, "zh"), ("こんにちは", "ja"), ("Hola, ¿cómo estás?", "es")):
        _, phones = synthesize(text, lang=lang)
        for p in phones:
            assert shape_sequence(p.label) != (), p.label


def test_table_shapes():
    for lab in ("p", "b", "m"):
        assert articulation_for(lab)["close"] == 1.0
    for lab in ("P", "B", "M"):
        assert articulation_for(lab, "arpabet")["close"] == 1.0
    assert articulation_for("f")["labiodental"] == 1.0
    assert articulation_for("V", "arpabet")["labiodental"] == 1.0
    for oo in ("u:", "UW"):
        a = articulation_for(oo)
        assert a["round"] > a["spread"]
    for ee in ("i:", "IY"):
        a = articulation_for(ee)
        assert a["spread"] > a["round"]
    assert articulation_for("AA")["open"] > articulation_for("IY")["open"]
    assert articulation_for("_:") == {"open": 0, "round": 0, "spread": 0, "close": 1,
                                      "labiodental": 0}


def test_truth_curves_follow_phones(en_speech):
    audio, phones = en_speech
    tc = truth_curves(phones, audio.duration, 0.01)
    n = int(np.ceil(audio.duration / 0.01))
    assert all(v.shape == (n,) for v in tc.values())
    assert tc["open"].max() > 0.6 and tc["close"].max() == pytest.approx(1.0)


# --- analysis --------------------------------------------------------------------------------

def _r(a, b):
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("lang,text,voice,floor", [
    # measured on these inputs: 0.81 (en, recognizer) / 0.77 (zh, acoustic); margin 0.1
    ("en", EN, "en-us+m1", 0.71),
    ("zh", ZH, "cmn+f4", 0.67),
])
def test_analyze_tracks_truth(lang, text, voice, floor):
    audio, phones = synthesize(text, voice=voice, rate=170)
    sp = analyze_speech(audio, lang=lang)
    assert sp.method == ("recognizer:en" if lang == "en" else "acoustic")
    tc = truth_curves(phones, sp.duration, sp.hop)
    n = min(sp.n, tc["open"].size)
    assert _r(sp.articulation["open"][:n], tc["open"][:n]) > floor
    assert _r(sp.articulation["open"], sp.loudness) > 0.4
    for k in ARTICULATION_KEYS:
        v = sp.articulation[k]
        assert v.shape == (sp.n,) and v.dtype == np.float32 and v.min() >= 0 and v.max() <= 1
    voiced = sp.pitch[sp.pitch > 0]
    assert voiced.size > 50 and 60 < np.median(voiced) < 350


def test_analyze_silence_closed_and_deterministic(en_speech):
    audio, _ = en_speech
    x = audio.samples
    pause = np.zeros(int(0.5 * audio.sample_rate), np.float32)
    y = np.concatenate([x, pause, x])
    a = Audio(y, audio.sample_rate)
    sp = analyze_speech(a, lang="en")
    i0 = int(len(x) / audio.sample_rate / sp.hop) + 8
    i1 = int((len(x) + len(pause)) / audio.sample_rate / sp.hop) - 8
    assert np.all(sp.articulation["open"][i0:i1] == 0)
    assert np.all(sp.articulation["close"][i0:i1] == 1)
    assert np.all(sp.activity[i0:i1] < 0.5)
    sp2 = analyze_speech(a, lang="en")
    for k in ARTICULATION_KEYS:
        assert np.array_equal(sp.articulation[k], sp2.articulation[k])
    assert np.array_equal(sp.loudness, sp2.loudness) and np.array_equal(sp.pitch, sp2.pitch)


def test_analyze_digital_silence_and_bad_input():
    sp = analyze_speech(Audio(np.zeros(16000, np.float32), 16000), lang="auto")
    assert sp.activity.max() == 0 and sp.articulation["close"].min() == 1
    assert sp.articulation["open"].max() == 0 and sp.method == "acoustic"
    with pytest.raises(InvalidOption):
        analyze_speech(Audio(np.zeros(16000, np.float32), 16000), hop=1.0)


def test_long_audio_analysis_memory_is_bounded():
    """Per-hop features are computed in blocks: analysing 3 minutes must not hold full-length
    spectrogram frames (which took ~1.5 GB for 5 minutes before)."""
    import tracemalloc

    from echomimic.speech.analyze import measure, prepare
    from echomimic.types import Audio

    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(sr * 180) / sr
    # a voiced-like signal with syllable-rate loudness changes, plus a little noise
    x = (0.3 * np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
         + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    audio = Audio(x, sr)
    tracemalloc.start()
    try:
        fr = measure(prepare(audio))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fr.n == 18000
    assert peak < 200 * 2**20, f"speech analysis of 3 minutes peaked at {peak / 2**20:.0f} MB"


def test_open_gain_restores_a_compressed_range_and_never_lowers():
    from echomimic.speech.analyze import OPEN_GAIN_MAX, OPEN_P95_TARGET, _open_gain

    rng = np.random.default_rng(1)
    act = np.ones(500, np.float32)
    small = (0.4 * rng.random(500)).astype(np.float32)          # a compressed clip
    out, gain = _open_gain(small, act)
    assert gain > 1.0 and abs(np.percentile(out, 95) - OPEN_P95_TARGET) < 0.02
    assert np.corrcoef(out, small)[0, 1] > 0.999                    # a scale: timing kept
    big = (0.9 * rng.random(500)).astype(np.float32)
    out2, gain2 = _open_gain(big, act)
    assert gain2 == 1.0 and np.array_equal(out2, big)
    tiny = (0.01 * rng.random(500)).astype(np.float32)              # near silence: capped
    assert _open_gain(tiny, act)[1] == OPEN_GAIN_MAX
