"""Portrait analysis (face detection, face mesh, person mask) with a content-hash cache."""

from .cache import analyze_cached
from .face import FaceAnalysis, analyze_face, detect_faces, load_models, prepare_portrait

__all__ = ["FaceAnalysis", "analyze_cached", "analyze_face", "detect_faces", "load_models",
           "prepare_portrait"]
