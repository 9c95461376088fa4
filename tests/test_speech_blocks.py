"""Speech analysis in blocks and hop by hop: the same rows as the whole clip's.

The offline pipeline analyses a recording in blocks ahead of the renderer
(:class:`echomimic.speech.incremental.SpeechAnalyzer`); live sessions analyse each new hop once
(:class:`echomimic.speech.incremental.LiveAnalyzer`).
"""

from __future__ import annotations

import numpy as np
import pytest

from echomimic.media import load_audio
from echomimic.speech import analyze_speech
from echomimic.speech.incremental import LiveAnalyzer, SpeechAnalyzer, utterances
from echomimic.types import ARTICULATION_KEYS, Audio

#: Largest difference allowed between a clip analysed in blocks and at once (float32 rows).
TOL = 1e-6


@pytest.fixture(scope="module")
def long_mixed(speech_en, speech_zh) -> Audio:
    """About 20 s: English and Mandarin phrases with pauses, twice (longer than one utterance of
    the recognizer, so the English path decodes several)."""
    parts = [np.asarray(load_audio(c.path, sample_rate=16000).samples, np.float32)
             for c in (speech_en, speech_zh)]
    x = np.concatenate(parts + [np.zeros(4000, np.float32)] + parts)
    return Audio(samples=x, sample_rate=16000)


def _max_diff(a, b) -> float:
    d = [float(np.max(np.abs(a.articulation[k] - b.articulation[k]))) for k in ARTICULATION_KEYS]
    return max(d + [float(np.max(np.abs(a.pitch - b.pitch)))])


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_blocks_equal_the_whole_clip(long_mixed, lang):
    whole = SpeechAnalyzer(long_mixed, lang=lang).run()
    an = SpeechAnalyzer(long_mixed, lang=lang)
    seen = list(an.blocks(0.37))                       # blocks that split hops unevenly
    assert len(seen) > 20 and seen == sorted(seen) and seen[-1] == whole.n
    blocked = an.speech
    assert _max_diff(whole, blocked) <= TOL
    np.testing.assert_array_equal(whole.activity, blocked.activity)
    np.testing.assert_array_equal(whole.loudness, blocked.loudness)
    assert whole.method == blocked.method == ("recognizer:en" if lang == "en" else "acoustic")
    assert [(p.label, p.start) for p in whole.phones] == [(p.label, p.start) for p in blocked.phones]
    assert whole.meta == blocked.meta
    # and the public entry point is the same analysis
    assert _max_diff(whole, analyze_speech(long_mixed, lang=lang)) <= TOL


def _rows(an: SpeechAnalyzer):
    for _ in an.blocks(1.0):
        pass
    return an.speech


def test_utterances_decoded_in_a_helper_process_give_the_same_rows(long_mixed, monkeypatch):
    """The recognizer holds the interpreter lock, so the offline pipeline decodes the following
    utterances in a helper process (``prefetch``): same phones and rows as decoding here; the
    helper is gone when the last utterance is read; a helper that fails, or is switched off,
    falls back to decoding here."""
    from concurrent.futures import Future

    from echomimic.speech import recognize as rz

    here = _rows(SpeechAnalyzer(long_mixed, lang="en"))
    an = SpeechAnalyzer(long_mixed, lang="en")
    assert len(an._utts) >= 2
    submitted = []
    submit = rz.RecognizerProcess.submit

    def counting(self, x):
        submitted.append(len(x))
        return submit(self, x)
    monkeypatch.setattr(rz.RecognizerProcess, "submit", counting)
    an.prefetch()
    helper = an._helper
    assert helper is not None
    helped = _rows(an)
    assert submitted                                   # utterances went to the helper
    assert an._helper is None and helper._proc.poll() is not None     # and it has ended
    assert [(p.label, p.start, p.end, p.weight) for p in here.phones] == \
        [(p.label, p.start, p.end, p.weight) for p in helped.phones]
    assert _max_diff(here, helped) == 0.0 and here.meta == helped.meta

    def failing(self, x):
        fut: Future = Future()
        fut.set_exception(EOFError("the recognizer process ended"))
        return fut
    monkeypatch.setattr(rz.RecognizerProcess, "submit", failing)
    an = SpeechAnalyzer(long_mixed, lang="en")
    an.prefetch()
    assert _max_diff(here, _rows(an)) == 0.0 and an._helper is None
    # a program that does not greet as the recognizer is not trusted with the audio
    monkeypatch.setattr(rz.RecognizerProcess, "submit", counting)
    monkeypatch.setattr(rz, "_HELLO", b"someone-else/1\n")
    an = SpeechAnalyzer(long_mixed, lang="en")
    an.prefetch()
    assert an._helper is not None
    assert _max_diff(here, _rows(an)) == 0.0 and an._helper is None
    monkeypatch.setattr("sys.executable", "/usr/bin/uwsgi")   # an embedded interpreter
    an = SpeechAnalyzer(long_mixed, lang="en")
    an.prefetch()
    assert an._helper is None
    monkeypatch.setenv(rz.PROCESS_ENV, "0")
    an = SpeechAnalyzer(long_mixed, lang="en")
    an.prefetch()
    assert an._helper is None
    assert _max_diff(here, _rows(an)) == 0.0


def test_ranges_in_any_order_equal_the_whole_clip(long_mixed):
    whole = SpeechAnalyzer(long_mixed, lang="zh").run()
    an = SpeechAnalyzer(long_mixed, lang="zh")
    n = an.n
    for a, b in [(n // 2, n // 2 + 77), (0, 13), (n - 40, n), (13, n // 2), (n // 2 + 77, n - 40)]:
        an.compute(a, b)
    assert _max_diff(whole, an.speech) <= TOL


def test_long_english_recordings_are_decoded_as_utterances_cut_at_pauses():
    hop = 0.01
    act = np.ones(3000)                              # 30 s of speech ...
    for s in (450, 1300, 2100):                      # ... with three 0.3 s pauses
        act[s:s + 30] = 0.0
    cuts = utterances(act, hop)
    assert cuts[0][0] == 0 and cuts[-1][1] == 3000
    assert all(b == c for (_, b), (c, _) in zip(cuts, cuts[1:]))
    assert [b for _, b in cuts[:-1]] == [465, 1315, 2115]      # the middle of each pause
    assert utterances(np.ones(1100), hop) == [(0, 1100)]       # up to 12 s: one utterance
    flat = utterances(np.ones(3000), hop)                       # no pause: at the upper bound
    assert flat[0] == (0, 600) and all(b - a <= 1200 for a, b in flat)


def test_live_analyzer_computes_each_hop_once(speech_en):
    x = np.asarray(load_audio(speech_en.path, sample_rate=16000).samples, np.float32)
    an = LiveAnalyzer()
    computed: list[tuple[int, int]] = []
    real = an._features

    def spy(xx, x0, j0, j1):
        if x0 >= 0:                                    # not the rows of digital silence
            computed.append((j0, j1))
        return real(xx, x0, j0, j1)

    an._features = spy
    for end in range(320, x.size, 320):                # 20 ms ticks
        an.update(x[:end], 0, end, min_hops=2)
    hops = [j for a, b in computed for j in range(a, b)]
    assert len(hops) == len(set(hops)) <= an.done    # no hop twice (silence: known rows)
    assert len(hops) > 0.5 * an.done
    assert an.done >= x.size // 160 - 4
    # the cached rows are the whole clip's per-hop measurements
    from echomimic.speech.features import frame_db, pitch_yin

    j = np.arange(100, an.done - 100)
    np.testing.assert_allclose(an.db[j % an.size], frame_db(x, 160)[j], atol=1e-4)
    np.testing.assert_allclose(an.pitch[j % an.size], pitch_yin(x, 160)[j], atol=1e-3)


def test_live_window_follows_the_whole_clip_analysis(speech_en):
    x = np.asarray(load_audio(speech_en.path, sample_rate=16000).samples, np.float32)
    an = LiveAnalyzer()
    whole = analyze_speech(Audio(x, 16000), lang="und", path="acoustic")
    opened = []
    for i in range(40, x.size // 160 - 10, 4):               # one frame (40 ms) at a time
        end = (i + 8) * 160                                   # 80 ms of lookahead
        an.update(x[:end], 0, end, upto=i + 8)
        sp = an.window(i - 30, i + 8)
        opened.append((sp.articulation["open"][30:34].mean(),
                       whole.articulation["open"][i:i + 4].mean()))
    live, ref = np.array(opened).T
    assert np.corrcoef(live, ref)[0, 1] > 0.85


def test_live_window_learns_the_openness_gain_of_a_muffled_voice(speech_en):
    """A voice whose openness comes out compressed (here: through an 800 Hz low-pass, like a
    muffled microphone) is scaled up by the whole-clip analysis; a live session learns the same
    gain from its recent speech, so its mouth opens as wide (it used to open 1/gain as wide)."""
    import scipy.signal

    x = np.asarray(load_audio(speech_en.path, sample_rate=16000).samples, np.float32)
    b, a = scipy.signal.butter(4, 800 / 8000)
    x = np.tile(scipy.signal.lfilter(b, a, x).astype(np.float32), 2)
    whole = analyze_speech(Audio(x, 16000), lang="und", path="acoustic")
    assert whole.meta.get("open_gain", 1.0) > 1.25          # the case this test is about
    an = LiveAnalyzer()
    opened = []
    for i in range(40, x.size // 160 - 10, 4):
        end = (i + 8) * 160
        an.update(x[:end], 0, end, upto=i + 8)
        sp = an.window(i - 30, i + 8)
        opened.append((sp.articulation["open"][30:34].mean(),
                       whole.articulation["open"][i:i + 4].mean(),
                       whole.activity[i:i + 4].mean() >= 0.5))
    live, ref, speaking = np.array(opened).T
    speaking = speaking.astype(bool)
    # after the first seconds (the gain is learnt from the speech heard so far)
    late = speaking & (np.arange(live.size) * 0.04 > 3.0)
    ratio = np.percentile(live[late], 90) / np.percentile(ref[late], 90)
    assert 0.85 < ratio < 1.2, ratio
    assert np.corrcoef(live, ref)[0, 1] > 0.85
    assert an.gain == pytest.approx(whole.meta["open_gain"], abs=0.25)
