"""MobileFace: real-time face analytics (detect, landmarks, pose, align, attributes, embed)."""
from mobileface.errors import ImageError, MobileFaceError, ModelError
from mobileface.types import Faces

__version__ = "0.1.0"


def __getattr__(name):
    # FaceAnalyzer pulls in onnxruntime and dlib: import it only when asked for.
    if name == "FaceAnalyzer":
        from mobileface.pipeline.image import FaceAnalyzer
        return FaceAnalyzer
    raise AttributeError(name)


__all__ = ["FaceAnalyzer", "Faces", "ImageError", "MobileFaceError", "ModelError", "__version__"]
