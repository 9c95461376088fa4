"""Personas: what we learn about one person from a short video of them talking.

``enroll(video) -> Persona`` builds one (a mouth atlas of their real mouth interiors indexed by
opening and shape, their articulation range, a speech-to-mouth fit, blink rate and head-motion
spread); ``save_persona`` / ``load_persona`` write and read the ``.persona`` file (a zip of JSON
and PNG, size-limited, never a pickle). The warp renderer paints the atlas into the mouth
(:class:`echomimic.render.warp.atlas.AtlasInterior`).
"""

from ..types import PERSONA_SCHEMA_ID, Persona
from .enroll import MIN_SECONDS, enroll
from .format import PERSONA_LIMITS, load_persona, persona_from_bytes, persona_to_bytes, save_persona
from .motion import adapt_track

__all__ = ["Persona", "PERSONA_SCHEMA_ID", "PERSONA_LIMITS", "MIN_SECONDS", "enroll",
           "load_persona", "save_persona", "persona_to_bytes", "persona_from_bytes",
           "adapt_track"]
