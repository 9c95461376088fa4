"""A demo made entirely offline: a photo that ships with scikit-image and speech from espeak-ng.

:func:`make_demo_inputs` writes the inputs (``astronaut.png`` and ``speech.wav``: two English
sentences with a pause between them, about 8 seconds) into a folder; :func:`run_demo` also
animates them into ``demo.mp4`` and a contact sheet ``demo.png``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["DEMO_SENTENCES", "DemoInputs", "DemoResult", "make_demo_inputs", "run_demo"]

#: What the demo says: two sentences, spoken one after the other with :data:`PAUSE_SECONDS`
#: of silence between them (so the mouth can be seen to close in the pause).
DEMO_SENTENCES = (
    "Hello! I am a talking portrait, made from a single photo.",
    "Everything you see was made offline, on an ordinary computer.",
)
#: Silence between the sentences, in seconds.
PAUSE_SECONDS = 1.0
#: espeak-ng voice and speaking rate (words per minute) of the demo.
DEMO_VOICE = "en-us"
DEMO_RATE = 160


@dataclass(frozen=True)
class DemoInputs:
    """Paths of the demo photo and speech, and the speech's length in seconds."""

    image: Path
    audio: Path
    audio_seconds: float


@dataclass(frozen=True)
class DemoResult(DemoInputs):
    """The demo inputs, the video and contact sheet made from them, and the pipeline's result."""

    video: Path = Path("demo.mp4")
    preview: Path = Path("demo.png")
    result: Any = None
    wall_seconds: float = 0.0


def demo_photo() -> np.ndarray:
    """scikit-image's astronaut photo (Eileen Collins, public domain), 512x512 RGB."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


def demo_speech() -> "Any":
    """The demo sentences spoken with espeak-ng and joined by a pause, as an ``Audio``."""
    from .speech.tts import synthesize
    from .types import Audio

    parts: list[np.ndarray] = []
    rate = 0
    for k, sentence in enumerate(DEMO_SENTENCES):
        audio, _ = synthesize(sentence, voice=DEMO_VOICE, rate=DEMO_RATE)
        rate = int(audio.sample_rate)
        if k:
            parts.append(np.zeros(int(round(PAUSE_SECONDS * rate)), np.float32))
        parts.append(np.asarray(audio.samples, np.float32))
    return Audio(samples=np.concatenate(parts), sample_rate=rate, source="demo")


def make_demo_inputs(folder: str | os.PathLike = "demo") -> DemoInputs:
    """Write ``astronaut.png`` and ``speech.wav`` into ``folder`` (created when missing)."""
    from PIL import Image

    from .speech.tts import write_wav

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    image = out / "astronaut.png"
    Image.fromarray(demo_photo()).save(image)
    speech = demo_speech()
    audio = write_wav(out / "speech.wav", speech)
    return DemoInputs(image=image, audio=audio, audio_seconds=float(speech.duration))


def run_demo(folder: str | os.PathLike = "demo", *, output: str | os.PathLike | None = None,
             preview: str | os.PathLike | None = None,
             progress: Callable[[str, float], None] | None = None,
             **options: Any) -> DemoResult:
    """Make the demo inputs in ``folder`` and animate them.

    Args:
        folder: where the photo and speech are written.
        output: the mp4 (default ``folder/demo.mp4``); its folder is created when missing.
        preview: the contact sheet (default ``folder/demo.png``).
        progress: the pipeline's ``progress(stage, fraction)`` callback.
        **options: :class:`~echomimic.pipeline.AnimateOptions` overrides.
    """
    from .pipeline import animate

    inputs = make_demo_inputs(folder)
    video = Path(output) if output is not None else Path(folder) / "demo.mp4"
    sheet = Path(preview) if preview is not None else video.with_suffix(".png")
    video.parent.mkdir(parents=True, exist_ok=True)
    sheet.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = animate(inputs.image, video, audio=inputs.audio, preview=sheet, progress=progress,
                     **options)
    return DemoResult(image=inputs.image, audio=inputs.audio, audio_seconds=inputs.audio_seconds,
                      video=Path(result.output), preview=sheet, result=result,
                      wall_seconds=time.perf_counter() - t0)
