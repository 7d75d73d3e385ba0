"""Classification accuracy for point-cloud benchmarks, as an `evaluate` metric module loaded by path (offline).

```python
import evaluate
from clip2point_apps.metrics import ACCURACY_METRIC_PATH

metric = evaluate.load(ACCURACY_METRIC_PATH)        # no Hub access: the module is read from the package
metric.compute(predictions=[0, 2, 1, 1], references=[0, 1, 1, 1], num_classes=3)
```

This file imports only numpy, datasets and evaluate (evaluate copies it on its own into its module cache).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Overall accuracy (OA), mean-class accuracy (mAcc), per-class accuracy and the confusion matrix of a
single-label classifier, as reported on ModelNet40 and ScanObjectNN.

- `overall_accuracy`: correct / total.
- `per_class_accuracy`: for every class c in `range(num_classes)`, correct among the examples whose reference is
  c; `None` for a class without any reference example.
- `mean_class_accuracy`: the mean of `per_class_accuracy` over the classes that have reference examples.
- `confusion_matrix`: `num_classes x num_classes` counts, row = reference class, column = predicted class.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
    num_classes (`int`, optional): number of classes (default: 1 + the largest id seen).
    label_names (`list` of `str`, optional): class names; adds `per_class_accuracy_by_name`.
Returns:
    overall_accuracy (`float`), mean_class_accuracy (`float`), per_class_accuracy (`list`),
    confusion_matrix (`list` of `list` of `int`), num_examples (`int`), and `per_class_accuracy_by_name`
    (`dict`) when `label_names` is given.
Examples:
    >>> metric = evaluate.load("path/to/accuracy_clip2point.py")
    >>> out = metric.compute(predictions=[0, 2, 1, 1], references=[0, 1, 1, 1], num_classes=3)
    >>> out["overall_accuracy"], out["mean_class_accuracy"]
    (0.75, 0.8333333333333333)
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AccuracyClip2point(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, num_classes=None, label_names=None):
        pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
        ref = np.asarray(references, dtype=np.int64).reshape(-1)
        if pred.shape != ref.shape:
            raise ValueError(f"{pred.size} predictions but {ref.size} references")
        if pred.size == 0:
            raise ValueError("no predictions to score")
        if (pred < 0).any() or (ref < 0).any():
            raise ValueError("class ids must be >= 0")
        seen = int(max(pred.max(), ref.max())) + 1
        if label_names is not None and num_classes is None:
            num_classes = len(label_names)
        if num_classes is None:
            num_classes = seen
        if seen > num_classes:
            raise ValueError(f"class id {seen - 1} is out of range for num_classes={num_classes}")
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label_names for num_classes={num_classes}")
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(confusion, (ref, pred), 1)
        support = confusion.sum(axis=1)
        correct = np.diag(confusion)
        per_class = [float(c / s) if s > 0 else None for c, s in zip(correct, support)]
        present = [a for a in per_class if a is not None]
        out = {
            "overall_accuracy": float(correct.sum() / pred.size),
            "mean_class_accuracy": float(np.mean(present)),
            "per_class_accuracy": per_class,
            "confusion_matrix": confusion.tolist(),
            "num_examples": int(pred.size),
        }
        if label_names is not None:
            out["per_class_accuracy_by_name"] = dict(zip(label_names, per_class))
        return out
