"""The kNN classifier against scikit-learn's KNeighborsClassifier (cosine, brute force)."""

from __future__ import annotations

import numpy as np
import pytest

from tessera_search.errors import InvalidInputError
from tessera_search.label import KNNClassifier, sort_classes
from tessera_search.quant import quantize


def _clustered(seed: int, n_train: int, n_test: int, n_classes: int = 6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (n_classes, 128)).astype(np.float32)
    y_train = rng.integers(0, n_classes, n_train)
    y_test = rng.integers(0, n_classes, n_test)
    x_train, _ = quantize(centres[y_train] + rng.normal(0, 1.2, (n_train, 128)).astype(np.float32))
    x_test, _ = quantize(centres[y_test] + rng.normal(0, 1.2, (n_test, 128)).astype(np.float32))
    return x_train, y_train, x_test


@pytest.mark.parametrize("k,weights", [(1, "uniform"), (5, "uniform"), (5, "distance"), (7, "distance"), (20, "uniform")])
def test_predictions_match_scikit_learn(k, weights):
    from sklearn.neighbors import KNeighborsClassifier

    x_train, y_train, x_test = _clustered(k, 60, 4000)
    ours = KNNClassifier(k, weights).fit(x_train, y_train)
    pred, conf = ours.predict(x_test)
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute", weights=weights)
    ref.fit(x_train.astype(np.float64), y_train)
    ref_pred = ref.predict(x_test.astype(np.float64))
    ours_labels = np.array([int(ours.classes_[p]) for p in pred])
    assert np.mean(ours_labels == ref_pred) >= 0.999
    proba = ref.predict_proba(x_test.astype(np.float64))
    same = ours_labels == ref_pred
    np.testing.assert_allclose(conf[same], proba.max(axis=1)[same], atol=1e-4)


def test_neighbours_are_the_exact_cosine_nearest():
    x_train, y_train, x_test = _clustered(3, 40, 300)
    clf = KNNClassifier(4).fit(x_train, y_train)
    dist, idx = clf.kneighbors(x_test)
    a = x_test.astype(np.float64)
    b = x_train.astype(np.float64)
    cos = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    ref = np.argsort(1 - cos, axis=1, kind="stable")[:, :4]
    assert np.mean(np.all(idx == ref, axis=1)) > 0.99
    np.testing.assert_allclose(dist, np.take_along_axis(1 - cos, idx, axis=1), atol=1e-5)


def test_vote_ties_go_to_the_class_that_sorts_first():
    e = np.eye(4, 128, dtype=np.float32)
    # the pixel is nearest to the "b" example, then the "a" one: k=2 ties 1-1
    clf = KNNClassifier(2).fit(e[:2], ["b", "a"])
    x = (3 * e[0] + 2 * e[1])[None]
    pred, conf = clf.predict(x)
    assert clf.classes_[pred[0]] == "a" and conf[0] == pytest.approx(0.5)
    # distance weights break the tie for the nearer example
    clf = KNNClassifier(2, "distance").fit(e[:2], ["b", "a"])
    pred, _ = clf.predict(x)
    assert clf.classes_[pred[0]] == "b"


def test_zero_distance_neighbours_take_the_whole_vote():
    e = np.eye(3, 128, dtype=np.float32)
    clf = KNNClassifier(3, "distance").fit(e, ["x", "y", "y"])
    pred, conf = clf.predict(e[:1] * 5)  # same direction as the "x" example: distance 0
    assert clf.classes_[pred[0]] == "x" and conf[0] == 1.0


def test_classes_sort_numerically_when_all_are_integers():
    assert sort_classes(["1100000000", "200", "31"]) == ["31", "200", "1100000000"]
    assert sort_classes(["wheat", "10", "barley"]) == ["10", "barley", "wheat"]


def test_bad_parameters_are_refused():
    with pytest.raises(InvalidInputError, match="k must be"):
        KNNClassifier(0)
    with pytest.raises(InvalidInputError, match="weights"):
        KNNClassifier(3, "gaussian")
    e = np.eye(2, 128, dtype=np.float32)
    with pytest.raises(InvalidInputError, match="at least 5 examples"):
        KNNClassifier(5).fit(e, ["a", "b"])
    with pytest.raises(InvalidInputError, match="all zeros"):
        KNNClassifier(1).fit(np.zeros((2, 128), np.int8), ["a", "b"])
