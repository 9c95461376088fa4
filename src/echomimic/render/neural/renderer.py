"""The ``echomimic-v1`` renderer plugin: EchoMimic V1 from local weights.

Unlike the warp renderer it is driven by the speech audio itself (whisper features), so the
pipeline hands it the clip first through :meth:`EchoMimicV1Renderer.prepare`; ``render`` then
returns the frames in order, decoding them a few at a time (frames are streamed to the encoder).

This module imports torch only when a renderer is built, so listing renderers stays light.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import RendererUnavailable
from ...types import MotionTrack, Portrait

#: Environment variables read when the option is not given explicitly.
ENV = {
    "weights": "ECHOMIMIC_V1_WEIGHTS", "variant": "ECHOMIMIC_V1_VARIANT", "steps": "ECHOMIMIC_V1_STEPS",
    "guidance": "ECHOMIMIC_V1_CFG", "device": "ECHOMIMIC_V1_DEVICE", "dtype": "ECHOMIMIC_V1_DTYPE",
    "compile": "ECHOMIMIC_V1_COMPILE", "resolution": "ECHOMIMIC_V1_RESOLUTION",
}
#: Where weights are looked for when neither --weights nor ECHOMIMIC_V1_WEIGHTS is given.
DEFAULT_WEIGHTS = Path.home() / ".cache" / "echomimic" / "echomimic-v1"
_DEPS = ("torch", "diffusers", "safetensors")
_DECODE_BATCH = 4


def _missing_deps() -> list[str]:
    return [m for m in _DEPS if importlib.util.find_spec(m) is None]


def _env(name: str) -> str | None:
    v = os.environ.get(ENV[name], "").strip()
    return v or None


class EchoMimicV1Renderer:
    """Talking-head frames from EchoMimic V1 (reference UNet + 3D denoising UNet + VAE).

    Args:
        portrait: the analysed photo; its face box places the face-locator mask.
        weights: the official weights folder (default: ``$ECHOMIMIC_V1_WEIGHTS`` or
            ``~/.cache/echomimic/echomimic-v1``).
        variant: "" (default), "acc" (6 steps, no guidance), "pose" / "pose_acc" (face-mesh
            pictures of the motion track instead of the face box); detected when None.
        steps, guidance: sampler settings (default 30 / 2.5, or 6 / 1.0 for "acc").
        device: "cuda", "cpu", … (default: CUDA when available).
        dtype: "fp32", "fp16" or "bf16" (default fp16 on a GPU, fp32 on CPU).
        compile: wrap the denoising UNet in ``torch.compile``.
        resolution: longer side of the network's working frame (default 512, a multiple of 8).
    """

    #: it denoises windows of the whole clip: it cannot render a live stream frame by frame
    needs_whole_clip = True


    name = "echomimic-v1"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, reason) without importing torch unless it and the weights are present."""
        miss = _missing_deps()
        if miss:
            return False, f"no torch stack ({', '.join(miss)} missing): pip install 'echomimic[neural]'"
        w = _env("weights")
        root = Path(w) if w else DEFAULT_WEIGHTS
        if not root.is_dir():
            return False, (f"no weights: pass --weights DIR (or set {ENV['weights']}); "
                           f"see docs/neural.md")
        import torch

        if not torch.cuda.is_available():
            return True, f"weights in {root}; no GPU: runs on CPU in fp32 (very slow)"
        return True, f"weights in {root}; GPU {torch.cuda.get_device_name(0)}"

    def __init__(self, portrait: Portrait, weights: str | os.PathLike | None = None, *,
                 variant: str | None = None, steps: int | None = None, guidance: float | None = None,
                 device: str | None = None, dtype: str | None = None, compile: bool | None = None,
                 resolution: int | None = None, **_ignored: Any) -> None:
        miss = _missing_deps()
        if miss:
            raise RendererUnavailable(f"renderer 'echomimic-v1' needs {', '.join(miss)}: "
                                      f"pip install 'echomimic[neural]'")
        import torch

        from .models import load_networks
        from .weights import resolve

        w = weights or _env("weights") or DEFAULT_WEIGHTS
        variant = variant if variant is not None else _env("variant")
        if variant is None and _ignored.get("accelerated"):
            variant = "acc"
        files = resolve(w, variant)
        acc = files.variant.endswith("acc")
        self.steps = int(steps or _env("steps") or (6 if acc else 30))
        self.guidance = float(guidance if guidance is not None else (_env("guidance") or (1.0 if acc else 2.5)))
        dev = device or _env("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        dname = (dtype or _env("dtype") or ("fp16" if dev.startswith("cuda") else "fp32")).lower()
        dtypes = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
                  "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        if dname not in dtypes:
            raise RendererUnavailable(f"unknown dtype {dname!r}; use fp32, fp16 or bf16")
        res = int(resolution or _env("resolution") or 512)
        if res < 64 or res % 8:
            raise RendererUnavailable(f"resolution must be a multiple of 8 and at least 64, got {res}")
        self.portrait = portrait
        self.nets = load_networks(files.root, files.variant, dev, dtypes[dname])
        use_compile = compile if compile is not None else (_env("compile") or "0") not in ("0", "false", "")
        self._unet = torch.compile(self.nets.denoising) if use_compile else self.nets.denoising
        h, w_ = portrait.image.shape[:2]
        s = min(1.0, res / max(h, w_))           # never upscale the photo
        self.work = (max(8, int(round(w_ * s / 8)) * 8), max(8, int(round(h * s / 8)) * 8))
        self._latents = None
        self._queue: list[np.ndarray] = []
        self._next = 0

    # -------------------------------------------------------------------------------------------

    def _reference_latent(self):
        import cv2
        import torch

        W, H = self.work
        img = cv2.resize(self.portrait.image, (W, H), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        vae = self.nets.vae
        with torch.no_grad():
            mean = vae.encode(x.to(self.nets.device, self.nets.dtype)).latent_dist.mean
        return mean.float() * 0.18215

    def face_mask(self) -> np.ndarray:
        """(H, W) float32 face-box mask at the working size (box dilated by 10 % per side)."""
        W, H = self.work
        h, w = self.portrait.image.shape[:2]
        x0, y0, x1, y1 = self.portrait.face_box
        sx, sy = W / w, H / h
        x0, x1, y0, y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
        px, py = int((x1 - x0) * 0.1), int((y1 - y0) * 0.1)
        m = np.zeros((H, W), np.float32)
        r0, r1 = max(0, int(round(y0)) - py), min(H, int(round(y1)) + py)
        c0, c1 = max(0, int(round(x0)) - px), min(W, int(round(x1)) + px)
        if r1 <= r0 or c1 <= c0:
            m[:] = 1.0
        else:
            m[r0:r1, c0:c1] = 1.0
        return m

    @staticmethod
    def _samples(audio: Any) -> np.ndarray:
        from ...media import load_audio
        from ...types import Audio

        if audio is None:
            raise RendererUnavailable("renderer 'echomimic-v1' is driven by speech: give --audio or --text")
        a = audio if isinstance(audio, Audio) else load_audio(audio, sample_rate=16000, max_duration=None)
        x = np.asarray(a.samples, dtype=np.float32)
        if int(a.sample_rate) != 16000:
            from math import gcd

            from scipy.signal import resample_poly

            g = gcd(16000, int(a.sample_rate))
            x = resample_poly(x, 16000 // g, int(a.sample_rate) // g).astype(np.float32)
        return x

    def prepare(self, track: MotionTrack, *, audio: Any, fps: float, seed: int = 0,
                progress: Callable[[str, float], None] | None = None) -> None:
        """Denoise the whole clip (``track.n_frames`` frames at ``fps``) from the speech audio.

        Reference features and audio features are computed once; latents for the clip are the only
        per-frame state kept (16 KB per frame at 512x512)."""
        import torch

        from .pipeline import denoise, initial_latents
        from .scheduler import DDIMVScheduler
        from .whisper import audio_features, feature_chunks

        nets = self.nets
        n = int(track.n_frames)
        feats = audio_features(nets.whisper, self._samples(audio))
        if feats.shape[0] == 0:
            raise RendererUnavailable("renderer 'echomimic-v1' needs some audio (the clip is empty)")
        chunks, _ = feature_chunks(feats, float(fps))
        if chunks.shape[0] < n:
            chunks = torch.cat([chunks, chunks[-1:].expand(n - chunks.shape[0], -1, -1)])
        chunks = chunks[:n].to(nets.device)
        W, H = self.work
        with torch.no_grad():
            ref = self._reference_latent()
            _, banks = nets.reference(ref.to(nets.dtype), torch.zeros(1, dtype=torch.long, device=nets.device))
        if nets.variant.startswith("pose"):
            face = self._pose_features(track)
        else:
            with torch.no_grad():
                mask = torch.from_numpy(self.face_mask())[None, None, None].to(nets.device)
                face = nets.face_locator(mask)
        lat = initial_latents((1, 4, n, H // 8, W // 8), seed).to(nets.device)
        report = (lambda f: progress("denoise", f)) if progress is not None else None
        self._latents = denoise(self._unet, banks, chunks, face, lat, DDIMVScheduler(self.steps),
                                self.guidance, progress=report)
        del banks
        self._next = 0
        self._queue = []

    def _pose_features(self, track: MotionTrack) -> Callable:
        """Per-window face-locator features of the frames' face-mesh pictures (pose weights)."""
        import torch

        from .pose import PoseFrames

        poses = PoseFrames(self.portrait, track, self.work)
        nets = self.nets

        @torch.no_grad()
        def features(idx: list[int]) -> torch.Tensor:
            imgs = np.stack([poses.image(i) for i in idx])                  # (F, H, W, 3)
            x = torch.from_numpy(imgs).permute(3, 0, 1, 2)[None].float() / 255.0
            return nets.face_locator(x.to(nets.device))

        return features

    def _decode_more(self) -> None:
        import torch

        if self._latents is None:
            raise RuntimeError("prepare() must run before render()")
        n = self._latents.shape[2]
        i = self._next
        if i >= n:
            raise IndexError("no more frames")
        j = min(n, i + _DECODE_BATCH)
        z = self._latents[0, :, i:j].transpose(0, 1) / 0.18215
        with torch.no_grad():
            x = self.nets.vae.decode(z.to(self.nets.device, self.nets.dtype)).sample.float()
        x = ((x / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for f in x:
            self._queue.append(self._place(f))
        self._next = j

    def _place(self, frame: np.ndarray) -> np.ndarray:
        """A decoded frame at the portrait's size."""
        import cv2

        h, w = self.portrait.image.shape[:2]
        return frame if frame.shape[:2] == (h, w) else cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC)

    def render(self, motion: dict[str, float]) -> np.ndarray:
        """The next frame (RGB uint8 at the portrait's size); ``motion`` is not used by V1."""
        if not self._queue:
            self._decode_more()
        return self._queue.pop(0)
