"""Data types shared by every stage of the pipeline (no logic beyond small helpers).

Coordinates: images are RGB ``uint8`` arrays of shape (H, W, 3). Landmarks are in pixel
coordinates of the image they belong to: x to the right, y down, z towards the camera's far side
(MediaPipe's convention: smaller z is nearer the camera), in the same pixel scale as x.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------
# Motion channels
# --------------------------------------------------------------------------------------------

#: Head pose channels. yaw/pitch/roll in degrees (yaw > 0 turns the face to the image's right,
#: pitch > 0 tilts the chin down (nod down), roll > 0 rotates clockwise in the image); tx, ty are
#: translations in units of the face width (inter-ocular outer-corner distance times 1); scale is
#: a multiplicative factor (1 = unchanged).
HEAD_CHANNELS: tuple[str, ...] = ("yaw", "pitch", "roll", "tx", "ty", "scale")

#: ARKit blendshape names (the 52 of Apple's ARFaceAnchor), the expression vocabulary.
ARKIT_BLENDSHAPES: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight", "tongueOut",
)

#: Extra non-ARKit channel: breathing phase offset of the torso, in [-1, 1].
EXTRA_CHANNELS: tuple[str, ...] = ("breath",)

ALL_CHANNELS: tuple[str, ...] = HEAD_CHANNELS + ARKIT_BLENDSHAPES + EXTRA_CHANNELS

#: Neutral value of each channel (what a frame with no motion holds).
NEUTRAL: dict[str, float] = {c: 0.0 for c in ALL_CHANNELS}
NEUTRAL["scale"] = 1.0

MOTION_SCHEMA_ID = "echomimic.motion/1"

# --------------------------------------------------------------------------------------------
# Body channels (schema echomimic.motion/2)
# --------------------------------------------------------------------------------------------

#: The 18 body joints of the DWPose/OpenPose layout, in that layout's order. "r_" is the
#: person's own right (on the image's left for a person facing the camera).
BODY_JOINTS: tuple[str, ...] = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
#: The 21 points of each hand (DWPose/OpenPose order): the wrist, then four per finger.
HAND_JOINTS: tuple[str, ...] = ("wrist",) + tuple(
    f"{finger}_{k}" for finger in ("thumb", "index", "middle", "ring", "pinky") for k in (1, 2, 3, 4))
#: Hand order of the layout's ``hands`` array: ``hands[0]`` is the left hand, ``hands[1]`` the right.
HANDS: tuple[str, ...] = ("l_hand", "r_hand")

#: Body channels: per frame, the displacement of each joint from the photo's own rest skeleton,
#: in units of the photo's shoulder width (x to the image's right, y down), named
#: ``body.<joint>.x`` / ``.y`` and ``body.<hand>.<point>.x`` / ``.y``. Being relative to the
#: person's size, they carry between photos and mix like the other channels; 0 is the photo's
#: pose.
BODY_CHANNELS: tuple[str, ...] = tuple(
    f"body.{j}.{a}" for j in BODY_JOINTS for a in ("x", "y")) + tuple(
    f"body.{h}.{j}.{a}" for h in HANDS for j in HAND_JOINTS for a in ("x", "y"))
NEUTRAL.update({c: 0.0 for c in BODY_CHANNELS})

#: Schema of motion files with body channels; files without body channels keep version 1.
MOTION_SCHEMA_ID_V2 = "echomimic.motion/2"


def is_body_channel(name: str) -> bool:
    """Whether ``name`` is a body channel (``body.*``)."""
    return name.startswith("body.")


@dataclass
class MotionTrack:
    """Per-frame head pose and expression coefficients at a fixed frame rate.

    ``values`` has shape (n_frames, len(channels)), float32. Expression channels are in [0, 1];
    head channels as documented in :data:`HEAD_CHANNELS`. Channels not present are neutral.
    """

    fps: float
    channels: list[str]
    values: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 2 or self.values.shape[1] != len(self.channels):
            raise ValueError(
                f"values must be (n_frames, {len(self.channels)}), got {self.values.shape}"
            )
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("duplicate channel names")

    @classmethod
    def neutral(cls, n_frames: int, fps: float, channels: tuple[str, ...] | list[str] = ALL_CHANNELS,
                meta: dict[str, Any] | None = None) -> "MotionTrack":
        chans = list(channels)
        vals = np.tile(np.array([NEUTRAL.get(c, 0.0) for c in chans], np.float32), (n_frames, 1))
        return cls(fps=float(fps), channels=chans, values=vals, meta=dict(meta or {}))

    @property
    def n_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps

    def __contains__(self, name: str) -> bool:
        return name in self.channels

    def get(self, name: str) -> np.ndarray:
        """Column of a channel (a neutral column when the channel is absent)."""
        if name in self.channels:
            return self.values[:, self.channels.index(name)]
        return np.full(self.n_frames, NEUTRAL.get(name, 0.0), np.float32)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.get(name)

    def set(self, name: str, column: np.ndarray) -> None:
        column = np.asarray(column, np.float32)
        if column.shape != (self.n_frames,):
            raise ValueError(f"column for {name!r} must have {self.n_frames} values")
        if name not in self.channels:
            self.channels.append(name)
            self.values = np.concatenate([self.values, column[:, None]], axis=1)
        else:
            self.values[:, self.channels.index(name)] = column

    def frame(self, i: int) -> dict[str, float]:
        return {c: float(v) for c, v in zip(self.channels, self.values[i])}


# --------------------------------------------------------------------------------------------
# Analysis results
# --------------------------------------------------------------------------------------------


@dataclass
class Portrait:
    """What the analysis stage knows about a photo.

    ``image`` is the RGB uint8 frame the renderer draws on; all coordinates refer to it.
    """

    image: np.ndarray               # (H, W, 3) uint8 RGB
    landmarks: np.ndarray           # (478, 3) float32, pixels (x, y, z); MediaPipe face mesh order
    face_box: tuple[int, int, int, int]   # x0, y0, x1, y1 of the chosen face (pixels)
    person_mask: np.ndarray         # (H, W) float32 in [0, 1], selfie segmentation
    face_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # all faces found
    face_index: int = 0
    content_hash: str = ""          # sha256 of the source image bytes
    body: Any = None                # analysis.body.BodyPose of this image (DWPose layout), or None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def eye_distance(self) -> float:
        """Outer eye-corner distance in pixels (landmarks 33 and 263)."""
        return float(np.linalg.norm(self.landmarks[33, :2] - self.landmarks[263, :2]))


@dataclass
class Phone:
    start: float          # seconds
    end: float            # seconds
    label: str            # phone label (ARPAbet for English recognition, espeak phoneme otherwise)
    weight: float = 1.0   # confidence in [0, 1]


#: Articulation target names produced by the speech stage, each per hop in [0, 1].
ARTICULATION_KEYS: tuple[str, ...] = ("open", "round", "spread", "close", "labiodental")


@dataclass
class Speech:
    """What the analysis stage knows about speech audio, on a fixed hop (default 10 ms).

    ``articulation`` holds mouth-shape targets per hop (keys: :data:`ARTICULATION_KEYS`):
    ``open`` jaw/lip opening, ``round`` lip rounding (o, u, w), ``spread`` lip spreading (i, e),
    ``close`` bilabial closure (p, b, m), ``labiodental`` lower lip to upper teeth (f, v).
    They are targets at the time the sound is heard; the motion stage adds the lead.
    """

    duration: float                       # seconds
    hop: float                            # seconds per analysis frame (0.01)
    activity: np.ndarray                  # (n,) float32 in [0, 1], speech probability
    loudness: np.ndarray                  # (n,) float32, normalized loudness envelope in [0, 1]
    pitch: np.ndarray                     # (n,) float32 Hz, 0 where unvoiced
    articulation: dict[str, np.ndarray]   # key -> (n,) float32 in [0, 1]
    phones: list[Phone] = field(default_factory=list)
    lang: str = "auto"                    # language actually used for the mouth timeline
    method: str = ""                      # e.g. "recognizer:en", "acoustic", "tts-events"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.activity.shape[0])

    def times(self) -> np.ndarray:
        return (np.arange(self.n) + 0.5) * self.hop


@dataclass
class Audio:
    """Decoded audio: mono float32 samples at ``sample_rate`` (16 kHz for analysis)."""

    samples: np.ndarray   # (n,) float32 in [-1, 1]
    sample_rate: int
    source: str = ""      # path or description

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


# --------------------------------------------------------------------------------------------
# Persona
# --------------------------------------------------------------------------------------------

PERSONA_SCHEMA_ID = "echomimic.persona/1"


@dataclass(eq=False)
class Persona:
    """What enrollment learned about one person from a short video of them talking.

    The mouth atlas holds real mouth interiors in the canonical mouth frame: column ``u`` runs
    from the left inner-lip corner to the right one, row ``t`` from the upper inner lip (0) to
    the lower inner lip (1). Entry ``k`` is indexed by ``atlas_opening[k]`` (inner-lip gap /
    inner mouth width) and ``atlas_shape[k]`` (inner mouth width / the person's rest width), and
    carries the colour of the lips around it (``atlas_lip``, RGB) so it can be re-coloured for
    another photo.
    """

    atlas: np.ndarray                       # (n, H, W, 3) uint8 RGB, canonical mouth frame
    atlas_opening: np.ndarray               # (n,) float32
    atlas_shape: np.ndarray                 # (n,) float32
    atlas_lip: np.ndarray                   # (n, 3) float32 RGB lip colour around each entry
    atlas_sharpness: np.ndarray             # (n,) float32 (variance of the Laplacian)
    opening: dict[str, float]               # articulation range: percentiles p5, p50, p95, max
    blink_rate: float | None                # blinks per minute
    head_motion: dict[str, float]           # yaw_std, pitch_std, roll_std (degrees)
    speech_fit: dict[str, float] | None = None   # gain, offset, r, frames (jawOpen real vs ours)
    lip_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)    # median lip colour over the video
    source: dict[str, Any] = field(default_factory=dict)       # frames, fps, duration, size, name
    schema: str = PERSONA_SCHEMA_ID

    @property
    def n_entries(self) -> int:
        return int(self.atlas.shape[0])
