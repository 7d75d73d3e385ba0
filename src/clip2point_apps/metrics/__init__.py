"""`evaluate` metric modules shipped with the package; load them by path (no Hub access needed)."""

import functools
from pathlib import Path

#: ``evaluate.load(ACCURACY_METRIC_PATH)``: overall / mean-class / per-class accuracy and the confusion matrix.
ACCURACY_METRIC_PATH = str(Path(__file__).resolve().parent / "accuracy_clip2point.py")


@functools.cache
def load_accuracy_metric():
    """``evaluate.load`` of :data:`ACCURACY_METRIC_PATH`, once per process (works offline)."""
    import evaluate

    return evaluate.load(ACCURACY_METRIC_PATH)


__all__ = ["ACCURACY_METRIC_PATH", "load_accuracy_metric"]
