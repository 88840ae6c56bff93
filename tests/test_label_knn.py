"""The kNN classifier against scikit-learn's KNeighborsClassifier (cosine, brute force)."""

from __future__ import annotations

import numpy as np
import pytest

from tessera_search.errors import InvalidInputError
from tessera_search.label import KNNClassifier, _knn, sort_classes
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


# -- the int8 path: fixed-point sort keys, exact integer products ---------------------


def _exact_top(x, e, k):
    """Columns of the k largest x . e_j / |e_j| in float64 (equal: lower column first)."""
    s = (x.astype(np.float64) @ e.T.astype(np.float64)) / np.linalg.norm(e.astype(np.float64), axis=1)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


@pytest.fixture(params=["numpy", "torch", "device"])
def backend(request, monkeypatch):
    """The classifier's backend: the int8 path on NumPy's float32 product, on torch's int8
    product, or the GPU path (``backend="cuda"``, ``_DeviceTopK``, here on torch's CPU
    device: the same code a GPU runs)."""
    if request.param == "numpy":
        return "numpy"
    pytest.importorskip("torch")
    if request.param == "torch":
        return "torch"
    monkeypatch.setattr(_knn, "_cuda_device", lambda t: t.device("cpu"))
    return "cuda"


@pytest.mark.parametrize("n_examples,k", [(80, 5), (7, 7), (200, 9), (1, 1)])
def test_int8_path_finds_the_exact_neighbour_sets(backend, n_examples, k):
    x_train, _, x_test = _clustered(n_examples + k, max(n_examples, 6), 9000)
    x_train = x_train[:n_examples]
    clf = KNNClassifier(k, backend=backend).fit(x_train, np.arange(n_examples) % 3)
    assert clf._keys is not None  # int8 examples take the key path
    cols, _ = clf._neighbours(x_test, cosines=False)
    ref = _exact_top(x_test, x_train, k)
    assert np.array_equal(np.sort(cols, axis=1), np.sort(ref, axis=1))


def test_int8_path_breaks_exact_ties_towards_the_lower_column(backend):
    rng = np.random.default_rng(4)
    base = rng.integers(-90, 90, (4, 128)).astype(np.int8)
    # examples 0-3 and their exact copies 4-7 (same scores), then 2 far-off examples
    e = np.concatenate([base, base, -base[:2]])
    x = (base[[0, 1, 2, 3, 0]] // 2).astype(np.int8)
    clf = KNNClassifier(3, backend=backend).fit(e, list("abcdabcdxy"))
    cols, _ = clf._neighbours(x, cosines=False)
    np.testing.assert_array_equal(np.sort(cols, axis=1), np.sort(_exact_top(x, e, 3), axis=1))
    # k=1: each pixel's nearest example and its copy tie exactly; the first listed wins
    one = KNNClassifier(1, backend=backend).fit(e, list("abcdabcdxy"))
    cols, _ = one._neighbours(x, cosines=False)
    np.testing.assert_array_equal(cols[:, 0], [0, 1, 2, 3, 0])


def test_int8_path_agrees_with_the_float_path_and_scikit_learn(backend):
    from sklearn.neighbors import KNeighborsClassifier

    x_train, y_train, x_test = _clustered(11, 80, 70_000)  # more than one block per thread
    x_test.setflags(write=False)  # the store hands out read-only arrays
    for weights in ("uniform", "distance"):
        ours = KNNClassifier(5, weights, backend=backend).fit(x_train, y_train)
        pred, conf = ours.predict(x_test)
        ref = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute", weights=weights)
        ref.fit(x_train.astype(np.float64), y_train)
        ref_pred = ref.predict(x_test.astype(np.float64))
        labels = np.array([int(ours.classes_[p]) for p in pred])
        assert np.mean(labels == ref_pred) >= 0.9999
        proba = ref.predict_proba(x_test.astype(np.float64)).max(axis=1)
        same = labels == ref_pred
        np.testing.assert_allclose(conf[same], proba[same], atol=1e-5)
        dist, idx = ours.kneighbors(x_test[:500])
        rd, ri = ref.kneighbors(x_test[:500].astype(np.float64))
        np.testing.assert_allclose(dist, rd, atol=1e-5)


def test_float_examples_or_pixels_take_the_float_path():
    x_train, y_train, x_test = _clustered(2, 30, 50)
    assert KNNClassifier(3).fit(x_train.astype(np.float32) + 0.5, y_train)._keys is None
    clf = KNNClassifier(3).fit(x_train.astype(np.float32), y_train)  # int8-valued floats: keys
    assert clf._keys is not None and not clf._keys_path(x_test.astype(np.float32))
    a, _ = clf.predict(x_test)
    b, _ = clf.predict(x_test.astype(np.float32))
    np.testing.assert_array_equal(a, b)


def test_the_gpu_path_is_chosen_when_torch_sees_one(monkeypatch):
    torch = pytest.importorskip("torch")
    x_train, y_train, x_test = _clustered(5, 40, 3000)
    monkeypatch.setattr(_knn, "_int8_torch", lambda rows: torch)
    cpu = KNNClassifier(5, "distance").fit(x_train, y_train)
    want = cpu.predict(x_test)
    assert cpu._device is None  # no GPU: the CPU key path ran
    monkeypatch.setattr(_knn, "_cuda_device", lambda t: t.device("cpu"))
    gpu = KNNClassifier(5, "distance").fit(x_train, y_train)
    got = gpu.predict(x_test)
    assert isinstance(gpu._device, _knn._DeviceTopK)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)


def test_a_torch_without_int8_products_leaves_numpy_in_charge():
    class NoInt8Products:  # an old or exotic torch build
        int8 = "int8"

        @staticmethod
        def ones(*args, **kwargs):
            raise NotImplementedError("no int8 on this backend")

    assert _knn._int_mm_works(NoInt8Products()) is False
    torch = pytest.importorskip("torch")
    assert _knn._int_mm_works(torch) is True


# -- backends: one public parameter, identical answers ----------------------------------


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_numpy_and_torch_backends_give_identical_neighbours_and_predictions(weights):
    pytest.importorskip("torch")
    x_train, y_train, x_test = _clustered(21, 90, 40_000)  # more than one block
    a = KNNClassifier(7, weights, backend="numpy").fit(x_train, y_train)
    b = KNNClassifier(7, weights, backend="torch").fit(x_train, y_train)
    assert a._engine(x_test) == (None, None) and b._engine(x_test)[0] is not None
    cols_a, _ = a._neighbours(x_test, cosines=False)
    cols_b, _ = b._neighbours(x_test, cosines=False)
    np.testing.assert_array_equal(np.sort(cols_a, axis=1), np.sort(cols_b, axis=1))
    np.testing.assert_array_equal(np.sort(cols_a, axis=1), np.sort(_exact_top(x_test, x_train, 7), axis=1))
    da, ia = a.kneighbors(x_test[:2000])
    db, ib = b.kneighbors(x_test[:2000])
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(da, db, atol=1e-6)
    pa, ca = a.predict(x_test)
    pb, cb = b.predict(x_test)
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_allclose(ca, cb, atol=1e-6)
    np.testing.assert_allclose(a.votes(x_test[:500]), b.votes(x_test[:500]), atol=1e-9)


def test_cuda_backend_without_a_gpu_fails_clearly(monkeypatch):
    from tessera_search.errors import MissingDependencyError

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MissingDependencyError, match=r"backend='cuda' needs a CUDA GPU.*backend='auto'"):
        KNNClassifier(5, backend="cuda")


def test_torch_backends_without_torch_say_so(monkeypatch):
    import sys

    from tessera_search.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    for backend in ("torch", "cuda"):
        with pytest.raises(MissingDependencyError, match=rf"backend='{backend}' needs torch.*pip install torch"):
            KNNClassifier(5, backend=backend)
    # auto and numpy never need it
    x_train, y_train, x_test = _clustered(1, 30, 100)
    for backend in ("auto", "numpy"):
        assert KNNClassifier(3, backend=backend).fit(x_train, y_train).predict(x_test)[0].shape == (100,)


def test_a_torch_without_int8_products_is_refused_for_backend_torch(monkeypatch):
    from tessera_search.errors import MissingDependencyError

    pytest.importorskip("torch")
    monkeypatch.setattr(_knn, "_int_mm_works", lambda torch: False)
    with pytest.raises(MissingDependencyError, match="int8 matrix product"):
        KNNClassifier(5, backend="torch")
    assert KNNClassifier(5, backend="auto").backend == "auto"


def test_unknown_backend_is_refused():
    with pytest.raises(InvalidInputError, match="backend must be one of auto, numpy, torch, cuda"):
        KNNClassifier(5, backend="tpu")
