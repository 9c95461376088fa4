"""The ``echomimic-v2`` renderer plugin: EchoMimic V2 (half body, hands) from local weights.

V2 uses V1's networks (:mod:`.unet2d`, :mod:`.unet3d`, :mod:`.whisper`) plus a pose encoder (V1's
face-locator class with 3 input channels) that sees one picture of the two hands per frame
(:mod:`.hands`, drawn exactly as the official code draws them). The sampler is V1's loop
(:func:`.pipeline.denoise`) with windows rotated by 3 frames per step; the accelerated weights
average per-window pseudo velocities (6 steps, no guidance).

The photo is cropped around the person (head to hips, centred under the face) to a square, which
is the framing V2 was trained on; frames are rendered for that square and pasted back into the
photo. Hands come from a pose file (``echomimic.pose/1``; see :func:`.hands.read_hands`), or from
``track.meta["body_pose"]`` when the motion stage provides one; the pose sequence loops when the
speech is longer. Without hands, the pose pictures are black.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import RendererUnavailable
from ...types import MotionTrack, Portrait
from .renderer import EchoMimicV1Renderer, _missing_deps

ENV_V2 = {
    "weights": "ECHOMIMIC_V2_WEIGHTS", "accelerated": "ECHOMIMIC_V2_ACCELERATED", "steps": "ECHOMIMIC_V2_STEPS",
    "guidance": "ECHOMIMIC_V2_CFG", "device": "ECHOMIMIC_V2_DEVICE", "dtype": "ECHOMIMIC_V2_DTYPE",
    "compile": "ECHOMIMIC_V2_COMPILE", "resolution": "ECHOMIMIC_V2_RESOLUTION", "pose": "ECHOMIMIC_V2_POSE",
    "crop": "ECHOMIMIC_V2_CROP",
}
DEFAULT_WEIGHTS_V2 = Path.home() / ".cache" / "echomimic" / "echomimic-v2"
_TRUE = ("1", "true", "yes", "on")


def _env2(name: str) -> str | None:
    v = os.environ.get(ENV_V2[name], "").strip()
    return v or None


def person_crop(portrait: Portrait) -> tuple[int, int, int]:
    """(x0, y0, side) of the square V2 frame around the person: from above the hair down to about
    the hips (5 face heights), centred horizontally on the face (the neck), kept inside the photo."""
    h, w = portrait.image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in portrait.face_box)
    fh = max(1.0, y1 - y0)
    side = int(min(h, w, max(64.0, 5.0 * fh)))
    cx = (x0 + x1) / 2.0
    left = int(round(min(max(cx - side / 2.0, 0.0), w - side)))
    top = int(round(min(max(y0 - 0.7 * fh, 0.0), h - side)))
    return left, top, side


class EchoMimicV2Renderer(EchoMimicV1Renderer):
    """Half-body frames from EchoMimic V2 (reference UNet + 3D denoising UNet + pose encoder + VAE).

    Args:
        portrait: the analysed photo (its face box places the person crop).
        weights: the official V2 weights folder (default ``$ECHOMIMIC_V2_WEIGHTS`` or
            ``~/.cache/echomimic/echomimic-v2``).
        accelerated: use the ``_acc`` weights (6 steps, no guidance, pseudo-velocity update).
        steps, guidance: sampler settings (default 30 / 2.5, accelerated 6 / 1.0); guidance <= 1
            runs without the unconditional branch (the official standard pipeline crashes there).
        device, dtype, compile: as for ``echomimic-v1`` (fp16 on GPU, fp32 on CPU by default).
        resolution: side of the square working frame (default 768, the official size; any
            multiple of 8 from 64; never above the crop's size in the photo).
        pose: an ``echomimic.pose/1`` file whose hands drive the pose pictures.
        crop: ``"person"`` (default: the square head-to-hips crop) or ``"none"`` (the whole photo,
            any aspect ratio).
    """

    name = "echomimic-v2"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, reason) without importing torch unless it and the weights are present."""
        miss = _missing_deps()
        if miss:
            return False, f"no torch stack ({', '.join(miss)} missing): pip install 'echomimic[neural]'"
        w = _env2("weights")
        root = Path(w) if w else DEFAULT_WEIGHTS_V2
        if not root.is_dir():
            return False, (f"no weights: pass --weights DIR (or set {ENV_V2['weights']}); "
                           f"see docs/neural.md")
        from .weights import WeightsError, resolve

        try:
            resolve(root, None, "v2")
        except WeightsError as exc:
            return False, str(exc)
        import torch

        if not torch.cuda.is_available():
            return True, f"weights in {root}; no GPU: runs on CPU in fp32 (very slow)"
        return True, f"weights in {root}; GPU {torch.cuda.get_device_name(0)}"

    def __init__(self, portrait: Portrait, weights: str | os.PathLike | None = None, *,
                 accelerated: bool | None = None, steps: int | None = None, guidance: float | None = None,
                 device: str | None = None, dtype: str | None = None, compile: bool | None = None,
                 resolution: int | None = None, pose: str | os.PathLike | None = None,
                 crop: str | None = None, **_ignored: Any) -> None:
        miss = _missing_deps()
        if miss:
            raise RendererUnavailable(f"renderer 'echomimic-v2' needs {', '.join(miss)}: "
                                      f"pip install 'echomimic[neural]'")
        import torch

        from .models import load_networks
        from .weights import resolve

        if accelerated is None:
            accelerated = (_env2("accelerated") or "0").lower() in _TRUE
        files = resolve(weights or _env2("weights") or DEFAULT_WEIGHTS_V2, "acc" if accelerated else "", "v2")
        self.accelerated = bool(accelerated)
        self.steps = int(steps or _env2("steps") or (6 if accelerated else 30))
        self.guidance = float(guidance if guidance is not None else (_env2("guidance") or (1.0 if accelerated else 2.5)))
        if self.steps < 1 or self.steps > 1000:
            raise RendererUnavailable(f"steps must be between 1 and 1000, got {self.steps}")
        dev = device or _env2("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        dname = (dtype or _env2("dtype") or ("fp16" if dev.startswith("cuda") else "fp32")).lower()
        dtypes = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
                  "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        if dname not in dtypes:
            raise RendererUnavailable(f"unknown dtype {dname!r}; use fp32, fp16 or bf16")
        res = int(resolution or _env2("resolution") or 768)
        if res < 64 or res % 8:
            raise RendererUnavailable(f"resolution must be a multiple of 8 and at least 64, got {res}")
        crop = (crop or _env2("crop") or "person").lower()
        if crop not in ("person", "none"):
            raise RendererUnavailable(f"crop must be 'person' or 'none', got {crop!r}")
        pose = pose or _env2("pose")
        self._hands = None
        self._pose_fps = None
        if pose:
            from .hands import read_hands

            self._hands, self._pose_fps = read_hands(pose)
        self.portrait = portrait
        h, w_ = portrait.image.shape[:2]
        if crop == "person":
            x0, y0, side = person_crop(portrait)
            self.box = (x0, y0, side, side)
        else:
            self.box = (0, 0, w_, h)
        bw, bh = self.box[2], self.box[3]
        s = min(1.0, res / max(bw, bh))                 # never upscale the photo
        self.work = (max(8, int(round(bw * s / 8)) * 8), max(8, int(round(bh * s / 8)) * 8))
        self.nets = load_networks(files.root, files.variant, dev, dtypes[dname], model="v2")
        use_compile = compile if compile is not None else (_env2("compile") or "0").lower() in _TRUE
        self._unet = torch.compile(self.nets.denoising) if use_compile else self.nets.denoising
        self._latents = None
        self._queue: list[np.ndarray] = []
        self._next = 0

    # -------------------------------------------------------------------------------------------

    def _crop_image(self) -> np.ndarray:
        x0, y0, bw, bh = self.box
        return self.portrait.image[y0:y0 + bh, x0:x0 + bw]

    def _reference_latent(self):
        import cv2
        import torch

        W, H = self.work
        img = cv2.resize(self._crop_image(), (W, H), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        with torch.no_grad():
            mean = self.nets.vae.encode(x.to(self.nets.device, self.nets.dtype)).latent_dist.mean
        return mean.float() * 0.18215

    def _track_hands(self, track: MotionTrack) -> tuple[np.ndarray | None, float | None]:
        if self._hands is not None:
            return self._hands, self._pose_fps
        body = track.meta.get("body_pose") if isinstance(track.meta, dict) else None
        hands = getattr(body, "hands", None) if body is not None else None
        if hands is None and isinstance(body, dict):
            hands = body.get("hands")
        if hands is None:
            return None, None
        fps = getattr(body, "fps", None) or (body.get("fps") if isinstance(body, dict) else None) or track.fps
        return np.asarray(hands, dtype=np.float64), float(fps)

    def pose_pictures(self, track: MotionTrack, fps: float) -> Callable[[list[int]], np.ndarray]:
        """A function of frame indices giving their (F, H, W, 3) uint8 hand pictures at the working
        size. Hand coordinates (normalised to the photo) are mapped into the crop; the pose
        sequence is timed by its own fps (when known) and loops."""
        from .hands import pose_picture

        W, H = self.work
        hands, pfps = self._track_hands(track)
        if hands is None:
            return lambda idx: np.zeros((len(idx), H, W, 3), np.uint8)
        ph, pw = self.portrait.image.shape[:2]
        x0, y0, bw, bh = self.box
        local = hands.copy()
        local[..., 0] = (hands[..., 0] * pw - x0) / bw
        local[..., 1] = (hands[..., 1] * ph - y0) / bh
        n_pose = local.shape[0]
        ratio = (pfps / fps) if pfps else 1.0

        def pictures(idx: list[int]) -> np.ndarray:
            out = []
            for i in idx:
                j = int(np.floor(i * ratio + 1e-9)) % n_pose
                out.append(pose_picture(local[j, ..., :2], local[j, ..., 2], H, W, skip_unscored=True))
            return np.stack(out)

        return pictures

    def prepare(self, track: MotionTrack, *, audio: Any, fps: float, seed: int = 0,
                progress: Callable[[str, float], None] | None = None) -> None:
        """Denoise the whole clip (``track.n_frames`` frames, the speech's length) at ``fps``."""
        import torch

        from .hands import pictures_to_tensor
        from .pipeline import denoise, initial_latents
        from .scheduler import DDIMVScheduler
        from .whisper import audio_features, feature_chunks

        nets = self.nets
        n = int(track.n_frames)
        feats = audio_features(nets.whisper, self._samples(audio))
        if feats.shape[0] == 0:
            raise RendererUnavailable("renderer 'echomimic-v2' needs some audio (the clip is empty)")
        chunks, _ = feature_chunks(feats, float(fps))
        if chunks.shape[0] < n:
            chunks = torch.cat([chunks, chunks[-1:].expand(n - chunks.shape[0], -1, -1)])
        chunks = chunks[:n].to(nets.device)
        W, H = self.work
        with torch.no_grad():
            ref = self._reference_latent()
            _, banks = nets.reference(ref.to(nets.dtype), torch.zeros(1, dtype=torch.long, device=nets.device))
        pictures = self.pose_pictures(track, float(fps))

        @torch.no_grad()
        def pose_features(idx: list[int]) -> torch.Tensor:
            x = pictures_to_tensor(pictures(idx)).to(nets.device, nets.dtype)
            return nets.face_locator(x)

        lat = initial_latents((1, 4, n, H // 8, W // 8), seed).to(nets.device)
        report = (lambda f: progress("denoise", f)) if progress is not None else None
        self._latents = denoise(self._unet, banks, chunks, pose_features, lat, DDIMVScheduler(self.steps),
                                self.guidance, progress=report, shift=3,
                                velocity="pseudo" if self.accelerated else "v")
        del banks
        self._next = 0
        self._queue = []

    def _place(self, frame: np.ndarray) -> np.ndarray:
        """The decoded crop pasted back into the photo."""
        import cv2

        x0, y0, bw, bh = self.box
        ph, pw = self.portrait.image.shape[:2]
        if frame.shape[:2] != (bh, bw):
            frame = cv2.resize(frame, (bw, bh), interpolation=cv2.INTER_CUBIC)
        if (x0, y0, bw, bh) == (0, 0, pw, ph):
            return frame
        out = self.portrait.image.copy()
        out[y0:y0 + bh, x0:x0 + bw] = frame
        return out

    @staticmethod
    def _samples(audio: Any) -> np.ndarray:
        if audio is None:
            raise RendererUnavailable("renderer 'echomimic-v2' is driven by speech: give --audio or --text")
        return EchoMimicV1Renderer._samples(audio)
