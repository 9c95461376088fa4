"""Text driving, end to end: ``animate --text`` in each language, the mouth measured with face mesh
on the rendered frames against the truth curve from espeak-ng's own phoneme timing.

    python benchmarks/text_sync.py [LANG ...]

Prints a Markdown table: r between the measured inner-lip gap and the truth ``open`` curve (best
lag within +-3 frames; the mouth leads the sound by design), and r at lag 0.
"""
import sys, time
import numpy as np, skimage.data
from echomimic.pipeline import AnimateOptions, load_speech, drive
from echomimic.analysis import analyze_face, prepare_portrait
from echomimic.render.warp import WarpRenderer
from echomimic.quality.measure import measure_frames
from echomimic.quality.metrics import best_lag_correlation
from echomimic.speech import truth_curves

TEXTS = {
 "en": "Hello there, how are you today? I am fine, thank you very much.",
 "zh": "你好，今天天气很好。我们一起去公园散步吧。",
 "yue": "你今日食咗飯未呀？我哋一齊去飲茶啦。",
 "ja": "今日は良い天気ですね。一緒に公園へ散歩に行きましょう。",
 "es": "Hola, ¿cómo estás? Me alegro mucho de verte por aquí.",
 "fr": "Bonjour, comment allez-vous? Je suis très content de vous voir.",
 "de": "Guten Tag, wie geht es Ihnen? Ich freue mich sehr, Sie zu sehen.",
}
rgb = np.ascontiguousarray(skimage.data.astronaut())
P = prepare_portrait(rgb, analyze_face(rgb), crop="face", size=512)
R = WarpRenderer(P)
print("| language | text | seconds | frames | r(lip gap, truth open) | lag (frames) | r at lag 0 |")
print("|---|---|---:|---:|---:|---:|---:|")
for lang in (sys.argv[1:] or TEXTS):
    opts = AnimateOptions(lang=lang, crop="face", size=512)
    speech, audio = load_speech(text=TEXTS[lang], opts=opts)
    n = max(1, int(round(speech.duration * opts.fps)))
    track = drive(speech=speech, motion=None, n_frames=n, opts=opts)
    frames = [R.render(track.frame(i)) for i in range(n)]
    tr = measure_frames(frames)
    tc = truth_curves(speech.phones, speech.duration, 0.01, scheme="espeak")["open"]
    # average the truth over each frame's window
    edges = np.round(np.arange(n + 1) / opts.fps / 0.01).astype(int)
    truth = np.array([tc[a:max(b, a + 1)].mean() if a < len(tc) else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    r, lag = best_lag_correlation(tr.lip_gap, truth, 3)
    r0 = float(np.corrcoef(np.nan_to_num(tr.lip_gap), truth)[0, 1])
    labels = " ".join(p.label for p in speech.phones[:12])
    print(f"| {lang} | {TEXTS[lang][:24]} | {speech.duration:.1f} | {n} | {r:.3f} | {lag} | {r0:.3f} |", flush=True)
    if lang == "ja":
        print("   ja phones:", " ".join(p.label for p in speech.phones), flush=True)
