"""models.train: the local loop (loss goes down, determinism, FedProx, class weights), prediction,
the scaler, and input validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedcore.errors import InvalidInput
from models.metrics import auc
from models.nets import build_model, flatten, get_weights, set_weights
from models.train import Scaler, apply_scaler, fit_scaler, moments, predict_proba, train_local


def _data(n: int = 2000, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d)
    logit = X @ w + 0.5 * X[:, 0] * X[:, 1] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return X, y


def _model(name: str, d: int = 8, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, d)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["logistic", "mlp"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_lowers_loss_and_learns(name: str, optimizer: str) -> None:
    X, y = _data()
    m = _model(name)
    before = auc(y, predict_proba(m, X)) if name == "mlp" else 0.5
    lr = 1e-2 if optimizer == "adam" else 0.1
    st = train_local(m, X, y, epochs=5, batch_size=128, lr=lr, optimizer=optimizer, seed=0)  # type: ignore[arg-type]
    assert st.n_samples == 2000 and st.epochs == 5 and len(st.epoch_losses) == 5
    assert st.steps == 5 * 16
    assert st.epoch_losses[-1] < st.epoch_losses[0]
    assert st.loss == st.epoch_losses[-1]
    after = auc(y, predict_proba(m, X))
    assert after > 0.8 and after > before


@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_deterministic_under_seed_and_seed_matters(name: str) -> None:
    X, y = _data()
    start = get_weights(_model(name, seed=3))
    runs = []
    for seed in (7, 7, 8):
        m = _model(name)
        set_weights(m, start)
        st = train_local(m, X, y, epochs=2, batch_size=64, lr=1e-2, seed=seed)
        runs.append((flatten(get_weights(m))[0], st.loss))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_training_does_not_disturb_global_rng_or_thread_count() -> None:
    X, y = _data(n=300)
    threads = torch.get_num_threads()
    m = _model("mlp")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_local(m, X, y, epochs=1, batch_size=64, lr=1e-3, seed=0, num_threads=1)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_fedprox_pulls_weights_toward_global() -> None:
    X, y = _data()
    global_w = get_weights(_model("mlp", seed=5))
    g_vec, _ = flatten(global_w)
    dists = []
    for mu in (0.0, 0.1, 10.0):
        m = _model("mlp")
        set_weights(m, global_w)
        train_local(m, X, y, epochs=3, batch_size=128, lr=1e-2, proximal_mu=mu, seed=0)
        dists.append(float(np.linalg.norm(flatten(get_weights(m))[0] - g_vec)))
    assert dists[0] > dists[1] > dists[2] > 0


def test_fedprox_explicit_global_weights_anchor_elsewhere() -> None:
    # Start at zero, anchor at a far-away point: a strong proximal term drags the weights there.
    X, y = _data(n=500)
    m = _model("logistic")
    anchor = [np.full((1, 8), 3.0, np.float32), np.array([-2.0], np.float32)]
    train_local(
        m,
        X,
        y,
        epochs=30,
        batch_size=500,
        lr=0.005,
        optimizer="sgd",
        proximal_mu=100.0,
        global_weights=anchor,
        seed=0,
    )
    w = get_weights(m)
    np.testing.assert_allclose(w[0], anchor[0], atol=0.05)
    np.testing.assert_allclose(w[1], anchor[1], atol=0.05)
    with pytest.raises(InvalidInput, match=r"global weight 'linear\.weight'"):
        train_local(m, X, y, proximal_mu=1.0, global_weights=[np.zeros(8), np.zeros(1)], seed=0)


def test_class_weight_balanced_raises_predicted_default_rate() -> None:
    X, y = _data(n=3000)
    assert y.mean() < 0.4
    means = {}
    for cw in (None, "balanced", {0: 1.0, 1: 1.0}):
        m = _model("logistic")
        train_local(m, X, y, epochs=10, batch_size=256, lr=1e-2, class_weight=cw, seed=0)  # type: ignore[arg-type]
        means[str(cw)] = float(predict_proba(m, X).mean())
    assert means["balanced"] > means["None"] + 0.05
    assert means["{0: 1.0, 1: 1.0}"] == pytest.approx(means["None"])
    with pytest.raises(InvalidInput, match="class_weight"):
        train_local(_model("logistic"), X, y, class_weight="auto", seed=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="class_weight keys"):
        train_local(_model("logistic"), X, y, class_weight={2: 1.0}, seed=0)


def test_predict_proba_is_eval_mode_and_in_unit_interval() -> None:
    X, _ = _data(n=100)
    m = build_model("mlp", 8, dropout=0.5)
    m.train()
    p1, p2 = predict_proba(m, X), predict_proba(m, X)
    np.testing.assert_array_equal(p1, p2)  # dropout off
    assert m.training  # mode restored
    assert p1.dtype == np.float64 and p1.shape == (100,) and np.all((p1 > 0) & (p1 < 1))
    np.testing.assert_allclose(predict_proba(m, X, batch_size=7), p1, rtol=1e-6)


@pytest.mark.parametrize(
    ("X", "y", "kw", "match"),
    [
        (np.zeros((3, 8)), np.zeros(2), {}, "3 rows but y has 2"),
        (np.zeros((0, 8)), np.zeros(0), {}, "zero rows"),
        (np.zeros(8), np.zeros(8), {}, "2-dimensional"),
        (np.zeros((2, 8)), np.array([0, 2]), {}, "only 0 and 1"),
        (np.full((2, 8), np.nan), np.array([0, 1]), {}, "NaN"),
        (np.zeros((2, 8)), np.array([0, 1]), {"epochs": 0}, "epochs"),
        (np.zeros((2, 8)), np.array([0, 1]), {"lr": -1.0}, "lr"),
        (np.zeros((2, 8)), np.array([0, 1]), {"optimizer": "lbfgs"}, "optimizer"),
        (np.zeros((2, 8)), np.array([0, 1]), {"proximal_mu": -1.0}, "proximal_mu"),
        (np.zeros((2, 8)), np.array([0, 1]), {"batch_size": 0}, "batch_size"),
        (np.zeros((2, 5)), np.array([0, 1]), {}, r"\(batch, 8\)"),
    ],
)
def test_train_local_validates_input(X: np.ndarray, y: np.ndarray, kw: dict, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        train_local(_model("logistic"), X, y, **kw)


def test_training_divergence_is_reported() -> None:
    X, y = _data(n=200)
    with pytest.raises(InvalidInput, match="diverged"):
        train_local(_model("logistic"), X * 1e30, y, epochs=1, batch_size=50, lr=1e30, optimizer="sgd")


def test_scaler_standardises_and_serialises() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(loc=5.0, scale=3.0, size=(1000, 4))
    X[:, 3] = 7.0  # constant column
    sc = fit_scaler(X)
    Z = apply_scaler(sc, X)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z[:, :3].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(Z[:, :3].std(axis=0), 1.0, atol=1e-5)
    assert sc.std[3] == 1.0 and np.all(Z[:, 3] == 0.0)
    restored = Scaler.from_dict(json.loads(json.dumps(sc.to_dict())))
    np.testing.assert_array_equal(restored.transform(X), Z)
    with pytest.raises(InvalidInput, match="3 columns"):
        sc.transform(X[:, :3])
    with pytest.raises(InvalidInput, match="'std'"):
        Scaler.from_dict({"mean": [0.0]})


def test_scaler_clip_and_federated_moments_match_pooled_fit() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.normal(loc=i, size=(300 + 100 * i, 3)) for i in range(3)]
    pooled = fit_scaler(np.concatenate(parts), clip=2.0)
    stats = [moments(p) for p in parts]
    n = sum(s[0] for s in stats)
    sum_x = np.sum([s[1] for s in stats], axis=0)
    sum_x2 = np.sum([s[2] for s in stats], axis=0)
    fed = Scaler.from_moments(n, sum_x, sum_x2, clip=2.0)
    np.testing.assert_allclose(fed.mean, pooled.mean, rtol=1e-12)
    np.testing.assert_allclose(fed.std, pooled.std, rtol=1e-9)
    Z = pooled.transform(np.array([[100.0, -100.0, 0.0]]))
    assert Z[0, 0] == 2.0 and Z[0, 1] == -2.0
    with pytest.raises(InvalidInput, match="clip"):
        Scaler(np.zeros(1), np.ones(1), clip=0.0)
    with pytest.raises(InvalidInput, match="zero rows"):
        fit_scaler(np.zeros((0, 3)))
