"""Transcript-guided lip-sync against blind recognition, on recordings whose truth is known: other
espeak-ng voices, rates and pitches than a fresh synthesis of the transcript, time-stretched and
noised versions.

    python benchmarks/transcript_align.py [LANG ...]

Prints a Markdown table per language and recording: r of the mouth-opening (and closure) target
against that recording's own phoneme truth, blind versus transcript-guided.
"""
import sys, time
import numpy as np
from scipy.signal import resample_poly
from echomimic.speech import synthesize, analyze_speech, truth_curves
from echomimic.speech.align import align_transcript
from echomimic.types import Audio, Phone

TEXTS = {
 "en": "The quick brown fox jumps over the lazy dog. Please call me back when you have time.",
 "zh": "今天天气很好，我们一起去公园散步吧。谢谢你的帮助。",
 "yue": "你今日食咗飯未呀？我哋一齊去飲茶啦。",
 "ja": "今日は良い天気ですね。一緒に公園へ散歩に行きましょう。",
 "es": "Hola, ¿cómo estás? Me alegro mucho de verte por aquí.",
 "fr": "Bonjour, comment allez-vous? Je suis très content de vous voir.",
 "de": "Guten Tag, wie geht es Ihnen? Ich freue mich sehr, Sie zu sehen.",
}
VOICE = {"en": "en-us", "zh": "cmn", "yue": "yue", "ja": "ja", "es": "es", "fr": "fr", "de": "de"}

def variants(lang):
    v = VOICE[lang]
    return [("m3 r140 p30", dict(voice=v+"+m3", rate=140, pitch=30), 1.0, 0.0),
            ("f2 r220 p70", dict(voice=v+"+f2", rate=220, pitch=70), 1.0, 0.0),
            ("klatt r175 stretch1.25 noise", dict(voice=v+"+klatt", rate=175, pitch=50), 1.25, 0.01),
            ("f4 r160 stretch0.85 noise", dict(voice=v+"+f4", rate=160, pitch=40), 0.85, 0.02)]

def make(text, kw, stretch, noise, seed=0):
    a, ph = synthesize(text, **kw)
    x = a.samples
    sr = a.sample_rate
    if stretch != 1.0:   # slow down / speed up by resampling (tempo and pitch together)
        up, down = int(round(stretch * 100)), 100
        x = resample_poly(x, up, down).astype(np.float32)
        ph = [Phone(p.start * stretch, p.end * stretch, p.label) for p in ph]
    # pad 0.4 s silence at the start, 0.3 s at the end
    pad0, pad1 = int(0.4 * sr), int(0.3 * sr)
    x = np.concatenate([np.zeros(pad0, np.float32), x, np.zeros(pad1, np.float32)])
    ph = [Phone(p.start + 0.4, p.end + 0.4, p.label) for p in ph]
    if noise:
        rng = np.random.default_rng(seed)
        x = (x + noise * rng.standard_normal(len(x))).astype(np.float32)
    return Audio(x, sr), ph

def r(a, b):
    n = min(len(a), len(b)); return float(np.corrcoef(a[:n], b[:n])[0, 1])

def main():
  langs = sys.argv[1:] or list(TEXTS)
  print("| language | recording | blind r(open) | transcript r(open) | blind r(close) | transcript r(close) | align s |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for lang in langs:
      for name, kw, st, nz in variants(lang):
          audio, ph = make(TEXTS[lang], kw, st, nz)
          truth = truth_curves(ph, audio.duration, 0.01, scheme="espeak")
          blind = analyze_speech(audio, lang=lang)
          t = time.perf_counter()
          guided = align_transcript(audio, TEXTS[lang], lang=lang)
          dt = time.perf_counter() - t
          print(f"| {lang} | {name} | {r(blind.articulation['open'], truth['open']):.2f} | "
                f"{r(guided.articulation['open'], truth['open']):.2f} | "
                f"{r(blind.articulation['close'], truth['close']):.2f} | "
                f"{r(guided.articulation['close'], truth['close']):.2f} | {dt:.2f} |", flush=True)

if __name__=="__main__":
  main()
