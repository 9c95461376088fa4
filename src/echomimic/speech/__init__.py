"""Speech stage: audio -> activity, loudness, pitch and a mouth-shape timeline; offline TTS.

Public entry points: :func:`analyze_speech` (audio -> :class:`echomimic.types.Speech`),
:func:`synthesize` (text -> audio + phoneme timing with espeak-ng), :func:`write_wav`,
:func:`articulation_for` and :func:`truth_curves` (the phonetic table).
"""

from .analyze import analyze_speech, speech_from_phones
from .phonetics import articulation_for, truth_curves
from .tts import synthesize, write_wav

__all__ = ["analyze_speech", "speech_from_phones", "synthesize", "write_wav", "articulation_for", "truth_curves"]
