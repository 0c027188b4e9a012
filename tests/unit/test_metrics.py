"""Our metrics equal scikit-learn's on random and tied cases."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, top_k_accuracy_score

from fusmae_fast.metrics import average_precision, classification_report, multilabel_map


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = (rng.random(n) < rng.uniform(0.05, 0.7)).astype(int)
    y[0] = 1
    scores = rng.normal(size=n)
    if seed % 2:  # ties
        scores = np.round(scores, 1)
    assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_multilabel_map_equals_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    y = (rng.random((80, 19)) < 0.2).astype(int)
    y[0] = 1  # every class has a positive
    s = rng.normal(size=(80, 19)) + y * rng.uniform(0, 2)
    if seed == 3:
        s = np.round(s, 0)
    out = multilabel_map(y, s)
    assert out["map_macro"] == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)
    assert out["map_micro"] == pytest.approx(average_precision_score(y, s, average="micro"), abs=1e-12)
    np.testing.assert_allclose(out["ap_per_class"], average_precision_score(y, s, average=None), atol=1e-12)


def test_class_without_positive_is_zero():
    y = np.array([0, 0, 0, 0])
    assert average_precision(y, np.array([0.1, 0.4, 0.3, 0.2])) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_classification_report_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=200)
    y[:10] = np.arange(10)
    logits = rng.normal(size=(200, 10))
    logits[np.arange(200), y] += rng.uniform(0, 2)
    rep = classification_report(y, logits, 10)
    pred = logits.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="weighted", zero_division=0)
    assert rep["top1"] == pytest.approx(np.mean(pred == y))
    assert rep["top3"] == pytest.approx(top_k_accuracy_score(y, logits, k=3, labels=np.arange(10)))
    assert rep["precision_weighted"] == pytest.approx(p)
    assert rep["recall_weighted"] == pytest.approx(r)
    assert rep["f1_weighted"] == pytest.approx(f)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="shape"):
        average_precision(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.ones(3), np.array([0.1, np.nan, 0.2]))
    with pytest.raises(ValueError, match="logits"):
        classification_report(np.zeros(3), np.zeros((3, 4)), 10)
