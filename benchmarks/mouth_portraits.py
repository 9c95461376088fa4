"""Contact sheets of the mouth on the development portraits, driven by real speech.

For every portrait of the media folder's ``portraits/`` and each size (``--sizes``, face crops),
the speech (``--audio``, a file of ``audio/``) drives the lips; the six frames with the widest
opening (at least 0.4 s apart) are rendered and their mouth regions (colour, 2.2 x the mouth
width, scaled to 200 px) are laid out one portrait per row, the photo's own mouth first.

    python benchmarks/mouth_portraits.py --out out/mouth                # 512 and 1024
    python benchmarks/mouth_portraits.py --out out/mouth --sizes 512 --audio walden.wav
    python benchmarks/mouth_portraits.py --out out/mouth --persona b.persona   # with a persona

The media folder is ``--media``, ``$ECHOMIMIC_MEDIA`` or ``../shared/media`` next to the
repository; without it the script says so and exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from mouth import _media_dir  # noqa: E402


def _pick(jaw: np.ndarray, fps: float, k: int = 6) -> list[int]:
    order = np.argsort(-jaw, kind="stable")
    gap = int(round(0.4 * fps))
    out: list[int] = []
    for i in order:
        if all(abs(int(i) - j) >= gap for j in out):
            out.append(int(i))
        if len(out) == k:
            break
    return sorted(out)


def _tile(frame: np.ndarray, lm: np.ndarray, side: int = 200) -> np.ndarray:
    import cv2

    a, b = lm[61, :2], lm[291, :2]
    c = 0.5 * (a + b)
    s = 2.2 * float(np.linalg.norm(b - a))
    m = np.array([[side / s, 0, side / 2 - c[0] * side / s], [0, side / s, side / 2 - c[1] * side / s]])
    return cv2.warpAffine(frame, m, (side, side), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def sheet(portrait_paths: list[Path], audio: Path, size: int, persona=None) -> np.ndarray:
    import cv2

    from echomimic.pipeline import AnimateOptions, drive, load_portrait, load_speech
    from echomimic.render import get_renderer

    opts = AnimateOptions(crop="face", size=size)
    speech, _ = load_speech(audio=str(audio), opts=opts)
    n = max(1, int(round(speech.duration * opts.fps)))
    rows = []
    for p in portrait_paths:
        portrait = load_portrait(str(p), opts)
        if not portrait.image.flags.writeable:
            portrait = dataclasses.replace(portrait, image=portrait.image.copy())
        track = drive(speech=speech, motion=None, n_frames=n, opts=opts)
        r = get_renderer("warp")(portrait, **({"persona": persona} if persona is not None else {}))
        lm = np.asarray(portrait.landmarks)
        tiles = [_tile(portrait.image, lm)]
        for i in _pick(track.get("jawOpen"), opts.fps):
            m = dict(zip(track.channels, track.values[i].tolist()))
            m.update(yaw=0.0, pitch=0.0, roll=0.0, tx=0.0, ty=0.0, scale=1.0)   # mouth in place
            tiles.append(_tile(r.render(m), lm))
        row = np.concatenate(tiles, 1)
        cv2.putText(row, p.name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    return np.concatenate(rows, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", help="media folder (portraits/, audio/)")
    ap.add_argument("--audio", default="echomimic_en.wav", help="speech file in audio/")
    ap.add_argument("--sizes", default="512,1024", help="face-crop sizes, comma-separated")
    ap.add_argument("--out", required=True, help="folder for the sheets (mouth_portraits_SIZE.png)")
    ap.add_argument("--persona", metavar="FILE", help="render with this persona (mouth_portraits_SIZE_persona.png)")
    a = ap.parse_args(argv)
    media = _media_dir(a.media)
    if media is None:
        print("no media folder (give --media or set ECHOMIMIC_MEDIA); nothing to draw")
        return 0
    from echomimic.media import save_png

    ports = sorted(p for p in (media / "portraits").iterdir() if p.is_file())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    persona = None
    if a.persona:
        from echomimic.persona import load_persona

        persona = load_persona(a.persona)
    for size in (int(s) for s in a.sizes.split(",")):
        path = out / f"mouth_portraits_{size}{'_persona' if persona is not None else ''}.png"
        save_png(path, sheet(ports, media / "audio" / a.audio, size, persona))
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
