"""Quality against ground truth: HOTA, CLEAR, IDF1 and J&F computed by TrackEval."""

from engine.eval.metrics import FrameMasks, Report, evaluate

__all__ = ["FrameMasks", "Report", "evaluate"]
