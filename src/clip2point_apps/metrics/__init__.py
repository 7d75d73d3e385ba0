"""`evaluate` metric modules shipped with the package; load them by path (no Hub access needed).

:func:`classification_metrics` is what evaluation and the training scripts' validation report."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: ``evaluate.load(ACCURACY_METRIC_PATH)``: overall / mean-class / per-class accuracy and the confusion matrix.
ACCURACY_METRIC_PATH = str(Path(__file__).resolve().parent / "accuracy_clip2point.py")


@functools.cache
def load_accuracy_metric():
    """``evaluate.load`` of :data:`ACCURACY_METRIC_PATH`, once per process (works offline)."""
    import evaluate

    return evaluate.load(ACCURACY_METRIC_PATH)


def classification_metrics(predictions, references, class_names: Sequence[str]) -> dict:
    """Overall, mean-class and per-class accuracy and the confusion matrix, through the evaluate module."""
    metric = load_accuracy_metric()
    predictions = np.asarray(predictions, dtype=np.int64).tolist()
    references = np.asarray(references, dtype=np.int64).tolist()
    return metric.compute(
        predictions=predictions,
        references=references,
        num_classes=len(class_names),
        label_names=list(class_names),
    )


__all__ = ["ACCURACY_METRIC_PATH", "classification_metrics", "load_accuracy_metric"]
