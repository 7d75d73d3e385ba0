"""The `evaluate` metric module shipped in the package: loads offline by path, equals a direct computation."""

from __future__ import annotations

import numpy as np
import pytest

from clip2point_apps.metrics import ACCURACY_METRIC_PATH, load_accuracy_metric


def direct(predictions, references, num_classes):
    pred, ref = np.asarray(predictions), np.asarray(references)
    confusion = np.zeros((num_classes, num_classes), dtype=int)
    for r, p in zip(ref, pred):
        confusion[r, p] += 1
    per_class = [
        float(np.mean(pred[ref == c] == c)) if (ref == c).any() else None for c in range(num_classes)
    ]
    present = [a for a in per_class if a is not None]
    return float(np.mean(pred == ref)), float(np.mean(present)), per_class, confusion


@pytest.fixture(scope="module")
def metric():
    return load_accuracy_metric()


def test_loads_offline_by_path(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert ACCURACY_METRIC_PATH.endswith("accuracy_clip2point.py")
    out = evaluate.load(ACCURACY_METRIC_PATH).compute(predictions=[0, 1], references=[0, 0])
    assert out["overall_accuracy"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_direct_computation(metric, seed):
    rng = np.random.default_rng(seed)
    k = 7
    refs = rng.integers(0, k, size=300)
    preds = np.where(rng.random(300) < 0.6, refs, rng.integers(0, k, size=300))
    out = metric.compute(predictions=preds.tolist(), references=refs.tolist(), num_classes=k)
    oa, macc, per_class, confusion = direct(preds, refs, k)
    assert out["overall_accuracy"] == pytest.approx(oa, abs=0, rel=1e-12)
    assert out["mean_class_accuracy"] == pytest.approx(macc, rel=1e-12)
    assert out["per_class_accuracy"] == pytest.approx(per_class, rel=1e-12)
    assert np.array_equal(np.asarray(out["confusion_matrix"]), confusion)
    assert out["num_examples"] == 300


def test_batches_and_names(metric):
    metric.add_batch(predictions=[0, 1, 1], references=[0, 1, 2])
    metric.add_batch(predictions=[2], references=[2])
    out = metric.compute(label_names=["a", "b", "c", "d"])
    assert out["overall_accuracy"] == 0.75
    # class "d" has no reference example: None, and left out of the mean
    assert out["per_class_accuracy"] == [1.0, 1.0, 0.5, None]
    assert out["mean_class_accuracy"] == pytest.approx(2.5 / 3)
    assert out["per_class_accuracy_by_name"] == {"a": 1.0, "b": 1.0, "c": 0.5, "d": None}
    assert out["confusion_matrix"][2] == [0, 1, 1, 0]


def test_mean_class_differs_from_overall_on_imbalance(metric):
    out = metric.compute(predictions=[0] * 10, references=[0] * 9 + [1], num_classes=2)
    assert out["overall_accuracy"] == pytest.approx(0.9)
    assert out["mean_class_accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"predictions": [0, 5], "references": [0, 1], "num_classes": 3}, "out of range"),
        ({"predictions": [0, -1], "references": [0, 1]}, ">= 0"),
        ({"predictions": [0], "references": [0], "num_classes": 2, "label_names": ["a"]}, "label_names"),
    ],
)
def test_clear_errors(metric, kwargs, message):
    with pytest.raises(ValueError, match=message):
        metric.compute(**kwargs)


def test_training_helper_uses_the_module():
    from clip2point_apps.metrics import classification_metrics

    out = classification_metrics([0, 1, 1], [0, 1, 0], ["x", "y"])
    assert out["overall_accuracy"] == pytest.approx(2 / 3)
    assert out["per_class_accuracy_by_name"] == {"x": 0.5, "y": 1.0}
