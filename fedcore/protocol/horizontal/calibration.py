"""Federated Platt calibration of a horizontal model, from summed statistics (both sides).

A horizontal model can rank well and still predict the wrong level of PD: a few rounds of Adam from a
zero intercept leave it near PD 0.5 (the quick start's MLP predicted 45% on a 5% portfolio), and class
weights or a balanced sample shift it on purpose. After the last round the parties fit
``PD' = sigmoid(a + b * s)`` on the model's logit ``s`` over **all parties' training rows** by Newton's
method on summed statistics, and fold ``(a, b)`` into the model's last linear layer (exact: the
output is ``w . h + w0``, so ``a + b * (w . h + w0)`` is the same layer with ``b w`` and ``a + b w0``).
Scoring, reports and monitoring then see calibrated PDs with no extra step.

Messages (``query.fc_calib``, one per Newton iteration, :data:`CALIB_ITERS` at most)::

    C -> parties   the final model (as for fc_save), the current (a, b), the previous iteration's summed
                   statistics (CKKS in HE mode)
    party -> C     the new (a, b) = Newton step from the decrypted sum (every party the same), then
                   CKKS([mean of (y - q), (y - q) s, q (1 - q), q (1 - q) s, q (1 - q) s^2] * n/u, n/u)
                   on its training rows at the new (a, b), q = sigmoid(a + b s)

What each side learns (HE mode): the **coordinator** adds ciphertexts only; it learns ``(a, b)`` per
iteration (two numbers about the pooled model, recorded in the model record) and that the parties agree.
A **party** learns per iteration the pooled gradient and Hessian of the calibration likelihood (five
means over all parties' training rows; with two parties, the other party's by subtraction, as for the
round aggregates). No row, score or label leaves a party. In plain mode (``secure="none"``) the
coordinator sees the summed statistics too.

The default is on (``TrainParams.calibrate``); ``calibrate=False`` keeps the raw model. The intercept-only
prior correction for class weights (``a = log(w0 / w1)``, ``b = 1``) is the special case the fit finds
by itself when the model was trained with weights ``w1`` on bads and ``w0`` on goods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from fedcore.errors import ProtocolError
from fedcore.protocol import horizontal as hz

MSG_CALIB = "query.fc_calib"
CALIB_ITERS = 12
MIN_SLOPE = 0.05  # b below this keeps b and fits a alone (calibration in the large; a noisy or inverted model)
TOL = 1e-5  # on a and b; CKKS sums carry about 1e-7 of noise


def newton_step(a: float, b: float, stats: np.ndarray) -> tuple[float, float]:
    """One Newton step of the Platt log-likelihood from pooled means
    ``[y - q, (y - q) s, q (1 - q), q (1 - q) s, q (1 - q) s^2]`` at ``(a, b)``; a step that would take
    ``b`` below :data:`MIN_SLOPE` moves ``a`` alone (the ranking is the model's: calibration never inverts it)."""
    g = np.asarray(stats[:2], dtype=np.float64)
    h = np.array([[stats[2], stats[3]], [stats[3], stats[4]]], dtype=np.float64) + 1e-12 * np.eye(2)
    step = np.linalg.solve(h, g)
    scale = min(1.0, 5.0 / max(float(np.abs(step).max()), 1e-300))  # damped far from the optimum
    if b + scale * float(step[1]) < MIN_SLOPE:  # would flip or flatten the ranking: fit the level only
        da = float(g[0] / h[0, 0])
        return a + max(-5.0, min(5.0, da)), b
    return a + scale * float(step[0]), b + scale * float(step[1])


def platt_stats(s: np.ndarray, y: np.ndarray, a: float, b: float) -> np.ndarray:
    """The five means :func:`newton_step` takes, on one party's rows."""
    z = a + b * s
    q = np.exp(-np.logaddexp(0.0, -z))
    r, w = y - q, q * (1.0 - q)
    return np.array([r.mean(), (r * s).mean(), w.mean(), (w * s).mean(), (w * s * s).mean()])


def fold_platt(weights: Sequence[np.ndarray], a: float, b: float) -> list[np.ndarray]:
    """The model with ``(a, b)`` folded into its last linear layer (the last two arrays: weight, bias)."""
    out = [np.array(w, copy=True) for w in weights]
    out[-2] = (out[-2] * b).astype(out[-2].dtype)
    out[-1] = (a + b * out[-1]).astype(out[-1].dtype)
    return out


# ---------------------------------------------------------------------------------------- party side


def handle_calib(msg: Message, context: Context) -> Message:
    """Party side of ``query.fc_calib`` (registered on the ClientApp by :mod:`.party`)."""
    from fedcore.protocol.horizontal.party import _begin, _global_model, _prepared, _reply
    from models.train import predict_logit

    env, cfg, _, p = _begin(msg, context)
    a, b = float(cfg.get("fc-calib-a", 0.0)), float(cfg.get("fc-calib-b", 1.0))
    prev = msg.content.array_records.get("calib")
    converged = False
    if prev is not None:
        if hz.is_encrypted(prev):
            stats = hz.decrypt_average(env.ckks(p.run), prev)
        else:
            (total,) = prev.to_numpy_ndarrays()
            stats = np.asarray(total[:-1] / total[-1], dtype=np.float64)
        if stats.shape != (5,) or not np.all(np.isfinite(stats)):
            raise ProtocolError("fc_calib: the summed calibration statistics are malformed")
        a0, b0 = a, b
        a, b = newton_step(a, b, stats)
        converged = max(abs(a - a0), abs(b - b0)) < TOL
    Xtr, ytr, _, _ = _prepared(env, p, cfg)
    model = _global_model(env, p, Xtr.shape[1], msg.content.array_records["arrays"])
    s = predict_logit(model, Xtr)
    vec = platt_stats(s, ytr.astype(np.float64), a, b)
    n = Xtr.shape[0] / p.he_unit
    if p.secure == "he":
        arrays = hz.encrypt_weighted(env.ckks(p.run), vec, n)
    else:
        arrays = ArrayRecord([np.concatenate([vec * n, [n]])])
    return _reply(msg, arrays=arrays, reply=ConfigRecord({"a": a, "b": b, "converged": converged}))


# ---------------------------------------------------------------------------------- coordinator side


def federated_platt(grid: Any, spec: Any, arrays: ArrayRecord, public_ctx: Any) -> dict[str, Any]:
    """Fit ``(a, b)`` over the online parties' training rows; returns the record
    ``{"method": "platt", "a", "b", "iterations", "converged"}`` (``a = 0, b = 1`` is the identity)."""
    from fedcore.protocol.horizontal.coordinator import _need, _online, _query, _rep

    a, b, done, it = 0.0, 1.0, False, 0
    total: ArrayRecord | None = None
    for it in range(1, CALIB_ITERS + 1):  # noqa: B007 (the count is recorded)
        per = {n: {"fc-calib-a": a, "fc-calib-b": b} for n in _online(grid, spec)}
        replies = _query(grid, spec, MSG_CALIB, per, arrays, None if total is None else {"calib": total})
        _need(spec, "calibration", replies)
        got = {(round(float(_rep(r)["a"]), 6), round(float(_rep(r)["b"]), 6)) for r in replies.values()}
        if len(got) != 1:
            raise ProtocolError(f"parties derived different calibrations from the same sums: {sorted(got)}")
        first = _rep(next(iter(replies.values())))
        a, b, done = float(first["a"]), float(first["b"]), bool(first["converged"])
        if not (math.isfinite(a) and math.isfinite(b)) or b < MIN_SLOPE:
            raise ProtocolError(f"calibration did not converge to a usable fit (a={a}, b={b})")
        if done:
            break
        recs = [replies[n].content.array_records["arrays"] for n in sorted(replies)]
        if public_ctx is not None:
            total = hz.sum_encrypted(public_ctx, recs)
        else:
            total = ArrayRecord([np.sum([r.to_numpy_ndarrays()[0] for r in recs], axis=0)])
    return {"method": "platt", "a": round(a, 6), "b": round(b, 6), "iterations": it, "converged": done}
