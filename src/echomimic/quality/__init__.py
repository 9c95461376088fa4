"""Quality metrics for generated talking-portrait videos.

Face measurements on frames (:mod:`.measure`, MediaPipe face mesh), figures computed from them
and from the audio (:mod:`.metrics`), face identity distances (:mod:`.identity`, dlib; needs the
``quality`` extra) and a whole-video evaluation (:mod:`.evaluate`). Used by the test suite, the
``echomimic evaluate`` command and the service's quality gate.
"""

from .evaluate import evaluate_video, load_audio, load_image
from .identity import SAME_PERSON, IdentityModel
from .measure import (
    FaceMeasurer,
    FaceTracks,
    head_pose,
    iter_video_frames,
    measure_frames,
    measure_image,
    measure_video,
)
from .metrics import (
    background_diff,
    best_lag_correlation,
    jitter,
    lipsync_loudness_r,
    loudness_envelope,
    opening_percentiles,
    silence_closure,
    speech_pauses,
)
from .mouth import mouth_figures


__all__ = [
    "FaceMeasurer", "FaceTracks", "head_pose", "iter_video_frames", "measure_frames",
    "measure_image", "measure_video",
    "background_diff", "best_lag_correlation", "jitter", "lipsync_loudness_r",
    "loudness_envelope", "opening_percentiles", "silence_closure", "speech_pauses",
    "mouth_figures", "IdentityModel", "SAME_PERSON", "evaluate_video", "load_audio", "load_image",
]
