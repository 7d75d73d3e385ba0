"""`evaluate` metric modules shipped with the package; load them by path (no Hub access needed)."""

from pathlib import Path

#: ``evaluate.load(ACCURACY_METRIC_PATH)``: overall / mean-class / per-class accuracy and the confusion matrix.
ACCURACY_METRIC_PATH = str(Path(__file__).resolve().parent / "accuracy_clip2point.py")


def load_accuracy_metric(**kwargs):
    """``evaluate.load`` of :data:`ACCURACY_METRIC_PATH` (extra keyword arguments go to ``evaluate.load``)."""
    import evaluate

    return evaluate.load(ACCURACY_METRIC_PATH, **kwargs)


__all__ = ["ACCURACY_METRIC_PATH", "load_accuracy_metric"]
