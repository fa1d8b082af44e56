"""Running the stages: on single images (IMAGE mode) and on video (VIDEO and STREAM modes).

``config`` the settings and running modes · ``image`` FaceAnalyzer · ``video``
the engine, FacePipeline · ``runner`` the threads that feed it from a source
and hand its results to sinks · ``slot`` the newest-frame mailbox.
"""
from mobileface.pipeline.config import PipelineConfig, RunningMode
from mobileface.pipeline.video import FacePipeline, FrameResult

__all__ = ["FacePipeline", "FrameResult", "PipelineConfig", "RunningMode"]
