"""models.nets: model shapes, the factory, and the weight get/set/flatten round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedcore.errors import InvalidInput
from models.nets import (
    MLP,
    LogisticRegression,
    Shapes,
    build_model,
    flatten,
    get_weights,
    set_weights,
    unflatten,
    weight_names,
)


@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_models_output_one_logit_per_row(name: str) -> None:
    torch.manual_seed(0)
    m = build_model(name, 7)  # type: ignore[arg-type]
    out = m(torch.randn(5, 7))
    assert out.shape == (5,)
    assert out.dtype == torch.float32


def test_build_model_passes_options_and_rejects_bad_ones() -> None:
    m = build_model("mlp", 4, hidden=(8, 4, 2), dropout=0.0)
    assert isinstance(m, MLP) and m.hidden == (8, 4, 2)
    assert [tuple(w.shape) for w in get_weights(m)] == [
        (8, 4),
        (8,),
        (4, 8),
        (4,),
        (2, 4),
        (2,),
        (1, 2),
        (1,),
    ]
    assert isinstance(build_model("logistic", 4), LogisticRegression)
    with pytest.raises(InvalidInput, match="model name"):
        build_model("tree", 4)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown options"):
        build_model("mlp", 4, width=3)
    with pytest.raises(InvalidInput, match="no options"):
        build_model("logistic", 4, hidden=(3,))
    with pytest.raises(InvalidInput, match="dropout"):
        MLP(4, dropout=1.0)
    with pytest.raises(InvalidInput, match="hidden"):
        MLP(4, hidden=())
    with pytest.raises(InvalidInput, match="n_features"):
        LogisticRegression(0)


def test_wrong_input_width_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match=r"\(batch, 3\)"):
        build_model("logistic", 3)(torch.zeros(2, 4))


def test_weight_order_is_state_dict_order_and_float32() -> None:
    m = build_model("mlp", 5, hidden=(6,), dropout=0.2)
    assert weight_names(m) == ["layers.0.weight", "layers.0.bias", "out.weight", "out.bias"]
    ws = get_weights(m)
    assert all(w.dtype == np.float32 for w in ws)
    # Copies, not views: mutating them does not touch the model.
    ws[0][:] = 123.0
    assert not np.any(get_weights(m)[0] == 123.0)


def test_set_weights_round_trip_changes_predictions() -> None:
    torch.manual_seed(0)
    a, b = build_model("mlp", 5), build_model("mlp", 5)
    x = torch.randn(4, 5)
    a.eval()
    b.eval()
    assert not torch.allclose(a(x), b(x))
    set_weights(b, get_weights(a))
    assert torch.equal(a(x), b(x))
    for wa, wb in zip(get_weights(a), get_weights(b), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_set_weights_rejects_bad_input_and_leaves_model_unchanged() -> None:
    m = build_model("logistic", 3)
    before = get_weights(m)
    with pytest.raises(InvalidInput, match="expected 2 weight arrays"):
        set_weights(m, before[:1])
    with pytest.raises(InvalidInput, match=r"'linear.weight' has shape \(3,\)"):
        set_weights(m, [np.ones(3, np.float32), before[1]])
    with pytest.raises(InvalidInput, match="NaN"):
        set_weights(m, [np.full((1, 3), np.nan, np.float32), before[1]])
    for w0, w1 in zip(before, get_weights(m), strict=True):
        np.testing.assert_array_equal(w0, w1)


def test_flatten_unflatten_round_trip() -> None:
    torch.manual_seed(1)
    ws = get_weights(build_model("mlp", 23))
    vec, shapes = flatten(ws)
    assert vec.dtype == np.float64 and vec.ndim == 1
    assert vec.shape[0] == shapes.total == sum(w.size for w in ws) == 3649
    back = unflatten(vec, shapes)
    assert [w.shape for w in back] == [w.shape for w in ws]
    for w0, w1 in zip(ws, back, strict=True):
        assert w1.dtype == np.float32
        np.testing.assert_array_equal(w0, w1)
    # The order is the weight order: the first entries are the first array.
    np.testing.assert_array_equal(vec[: ws[0].size], ws[0].reshape(-1).astype(np.float64))
    # Averaging flat vectors equals averaging arrays.
    vec2, _ = flatten([2 * w for w in ws])
    for w, avg in zip(ws, unflatten((vec + vec2) / 2, shapes), strict=True):
        np.testing.assert_allclose(avg, 1.5 * w, rtol=1e-6)


def test_shapes_serialise_and_unflatten_validates() -> None:
    vec, shapes = flatten([np.zeros((2, 3)), np.zeros(4), np.zeros(())])
    assert shapes.total == 11
    assert Shapes.from_list(shapes.to_list()) == shapes
    with pytest.raises(InvalidInput, match="length 10"):
        unflatten(vec[:10], shapes)
    with pytest.raises(InvalidInput, match="one-dimensional"):
        unflatten(vec.reshape(1, -1), shapes)
    with pytest.raises(InvalidInput, match="negative"):
        Shapes.from_list([[2, -1]])
    empty_vec, empty_shapes = flatten([])
    assert empty_vec.shape == (0,) and unflatten(empty_vec, empty_shapes) == []
