"""Errors a user can cause. Each has a stable machine-readable ``code``.

The CLI turns an :class:`EchomimicError` into one line on stderr and exit code 2; the REST API
into a 4xx response with ``{"code", "message"}``. Anything else is a bug.
"""

from __future__ import annotations


class EchomimicError(Exception):
    """Base class of errors caused by the input or the options (not by a bug)."""

    code = "invalid_input"
    http_status = 422

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class InvalidOption(EchomimicError):
    code = "invalid_option"


class ImageError(EchomimicError):
    code = "image_unreadable"


class ImageTooLarge(ImageError):
    code = "image_too_large"
    http_status = 413


class NoFaceFound(ImageError):
    code = "no_face"


class AudioError(EchomimicError):
    code = "audio_unreadable"


class AudioTooLong(AudioError):
    code = "audio_too_long"
    http_status = 413


class VideoError(EchomimicError):
    code = "video_unreadable"


class MotionError(EchomimicError):
    code = "motion_invalid"


class PoseError(MotionError):
    """A body-pose file (``echomimic.pose/1``, JSON or NPZ) that cannot be used: wrong schema,
    wrong shapes, NaN, out-of-range values, too many frames, too large, or a pickle."""

    code = "pose_invalid"


class RendererUnavailable(EchomimicError):
    code = "renderer_unavailable"


class Cancelled(EchomimicError):
    """Raised from a progress callback to stop a job; not the user's fault."""

    code = "cancelled"
    http_status = 409


class ContentRefused(EchomimicError):
    """A moderation check refused the job's inputs or texts (see :mod:`echomimic.safety`)."""

    code = "content_refused"


class PersonaError(EchomimicError):
    """A persona file (``.persona``) that is corrupt, truncated, of another schema, unsafe, or an
    enrollment video that cannot make one."""

    code = "persona_invalid"


class PersonaTooLarge(PersonaError):
    code = "persona_too_large"
    http_status = 413
