"""The handlers a party runs in vertical training (lenders and the platform)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedcore.crypto import he
from fedcore.crypto.envelope import EnvelopePrivateKey
from fedcore.errors import InvalidInput, NotFound, PermissionDenied, ProtocolError
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.sealing import (
    PartyIdentity,
    open_for,
    open_from_peer,
    seal_for,
    seal_to_peers,
    verify_announcement,
)
from fedcore.protocol.tasks import HandlerRegistry, TaskContext
from fedcore.protocol.vertical.messages import (
    ABORT,
    BACKWARD,
    CHECKPOINT,
    CURVATURE_CAP,
    EVAL_LENDER,
    EVAL_PLATFORM,
    F_CKKS,
    F_F64,
    F_SEALED,
    F_U128,
    FINISH,
    FORWARD,
    KEYS,
    MOD,
    MODEL_KIND,
    RESIDUAL,
    REVEAL,
    SCALER,
    SESSION_TTL_S,
    SETUP,
    START,
    Frame,
    _one,
    decode_fixed,
    encode_fixed,
    f64_of,
    frames_bytes,
    parse_frames,
    u128_frame,
    u128_of,
)
from fedcore.protocol.vertical.numerics import (
    SLOTS,
    _add_plain,
    _fold,
    _pad,
    _seed_stream,
    _standardize,
    _standardizer,
    batch_rows,
    loss_basis,
    loss_coefficients,
    split_rows,
    uniform_masks,
)
from fedcore.protocol.vertical.session import VerticalSource, _Adam, _f, _Session, table_options

VALIDATION_HIST = "validation_hist.json"
"""A lender's histogram of the best joint model's validation scores, beside its slice."""

log = logging.getLogger(__name__)


def _u2(u: np.ndarray) -> np.ndarray:
    """The residual's second-order regressor: ``u^2`` capped at ``CURVATURE_CAP^2``. Uncapped, ``gamma u^2``
    grows without bound where the expansion no longer holds (|u| beyond a few units) and pushes margins
    further out: a runaway (validation PDs of 0 and 1 after a few epochs at a large learning rate)."""
    out: np.ndarray = np.minimum(u * u, CURVATURE_CAP**2)
    return out


class VerticalParty:
    """The party-side steps of vertical training, as task handlers (per-run state in memory, per-epoch
    checkpoints under ``state_dir/<run_id>``, slices under ``model_dir/<run_id>/slice.json``)."""

    def __init__(
        self,
        name: str,
        source: VerticalSource,
        state_dir: Path,
        model_dir: Path,
        metrics: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] | None = None,
        *,
        identity: PartyIdentity,
    ) -> None:
        """``metrics(y, p)``: the lender's validation report of the final model (e.g.
        :func:`models.metrics.evaluate`); without it a lender reports only its row count. ``identity``
        binds the session's envelope key to this party's certificate (peers refuse unbound keys)."""
        self.name = name
        self.identity = identity
        self.metrics = metrics
        self.source = source
        self.state_dir = Path(state_dir)
        self.model_dir = Path(model_dir)
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def register(self, registry: HandlerRegistry) -> None:
        for kind, fn in (
            (SETUP, self._setup), (KEYS, self._keys), (START, self._start), (SCALER, self._scaler),
            (FORWARD, self._forward), (RESIDUAL, self._residual), (BACKWARD, self._backward),
            (EVAL_PLATFORM, self._eval_platform), (EVAL_LENDER, self._eval_lender), (REVEAL, self._reveal),
            (CHECKPOINT, self._checkpoint), (FINISH, self._finish), (ABORT, self._abort),
        ):
            registry.register(kind, fn)

    # -- helpers

    def _session(self, ctx: TaskContext, role: str | None = None) -> _Session:
        with self._lock:
            s = self._sessions.get(ctx.run_id)
        if s is None:
            raise NotFound(f"no vertical run {ctx.run_id!r} at this party (was it restarted?)")
        if role is not None and s.role != role:
            raise InvalidInput(f"step {ctx.kind!r} is for the {role}, this party is the {s.role}")
        return s

    @staticmethod
    def _purpose(s: _Session, what: str, epoch: int, step: int) -> str:
        return f"vertical/{s.run_id}/{what}/{epoch}/{step}"

    def _seal(self, s: _Session, to: str, data: bytes, what: str, epoch: int, step: int) -> bytes:
        return seal_for(s.peer_keys[to], data, self._purpose(s, what, epoch, step), self.name, to)

    def _open(self, s: _Session, frm: str, data: bytes, what: str, epoch: int, step: int) -> bytes:
        return open_for(s.env_key, data, self._purpose(s, what, epoch, step), frm, self.name)

    def _enc(self, s: _Session, values: np.ndarray) -> he.EncryptedVector:
        return he.encrypt_vector(s.pub, values)

    def _parse_ct(self, s: _Session, data: bytes) -> he.EncryptedVector:
        return he.EncryptedVector.from_bytes(s.pub, data)

    def _state_path(self, run_id: str, epoch: int) -> Path:
        return self.state_dir / run_id / f"epoch-{epoch}.json"

    # -- setup

    def _setup(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        role = str(_f(params, "role"))
        lenders = [str(x) for x in _f(params, "lenders")]
        platform = str(_f(params, "platform"))
        pub = he.CkksPublicContext.from_bytes(ctx.read_payload())
        if pub.params.coeff_mod_bit_sizes != he.DOT.coeff_mod_bit_sizes or pub.has_galois_keys:
            raise ProtocolError("vertical training expects the DOT CKKS preset without Galois keys")
        seed = int(_f(params, "seed"))
        val_fraction = float(_f(params, "val_fraction"))
        s = _Session(ctx.run_id, role, self.name, lenders, platform, pub, EnvelopePrivateKey.generate(), seed)
        psi_runs = dict(_f(params, "psi_runs"))
        dataset = params.get("dataset")
        if role == "lender":
            if self.name not in lenders:
                raise InvalidInput(f"party {self.name!r} is not among the run's lenders")
            t = self.source.vertical_table(str(psi_runs[self.name]), None if dataset is None else str(dataset),
                                           labels=True, **table_options(params))
            if t.y is None:
                raise InvalidInput(f"lender {self.name!r} has no labels for run {ctx.run_id!r}")
            s.tables[self.name] = t
        elif role == "platform":
            for name in lenders:
                s.tables[name] = self.source.vertical_table(
                    str(psi_runs[name]), None if dataset is None else str(dataset), labels=False,
                    **table_options(params))
        else:
            raise InvalidInput(f"unknown vertical role {role!r}")
        for name, t in s.tables.items():
            s.splits[name] = split_rows(len(t.X), val_fraction, seed, lenders.index(name))
        first = next(iter(s.tables.values()))
        with self._lock:
            now = time.monotonic()
            for rid in [r for r, x in self._sessions.items() if now - x.created > SESSION_TTL_S]:
                self._sessions.pop(rid, None)
            self._sessions[ctx.run_id] = s
        return TaskReply({
            "rows": {n: len(t.X) for n, t in s.tables.items()},
            "train_rows": {n: len(s.splits[n][0]) for n in s.tables},
            "features": list(first.features),
            "dataset": first.dataset,
            "data_hash": hashlib.sha256("".join(t.data_hash() for t in s.tables.values()).encode()).hexdigest(),
            "envelope_key": self.identity.announcement(s.env_key),
        })

    def _set_keys(self, s: _Session, keys: Mapping[str, Any]) -> None:
        """Peers' session keys, each checked against its certificate (PermissionDenied if swapped)."""
        for name in [*s.lenders, s.platform]:
            if name != self.name:
                ann = keys.get(name)
                if not isinstance(ann, Mapping):
                    raise PermissionDenied(f"vertical: no signed key announcement for {name!r}")
                s.peer_keys[name] = verify_announcement(self.identity.ca_pem, ann, name)
                s.peer_anns[name] = ann

    def _keys(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx, "lender")
        if s.index != 0:
            raise InvalidInput("only the first lender makes the lenders' common seed")
        self._set_keys(s, dict(_f(params, "keys")))
        s.common_seed = secrets.token_bytes(32)
        peers = {n: s.peer_anns[n] for n in s.lenders if n != self.name}
        sealed: dict[str, JSONValue] = dict(seal_to_peers(self.identity, peers, s.common_seed,
                                                          f"vertical-seed/{s.run_id}"))
        return TaskReply({"sealed_seed": sealed})

    def _start(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        self._set_keys(s, dict(_f(params, "keys")))
        s.steps = int(_f(params, "steps"))
        s.train_rows = {str(k): int(v) for k, v in dict(_f(params, "train_rows")).items()}
        lr, l2 = float(_f(params, "lr")), float(params.get("l2") or 0.0)
        raw_epoch = params.get("resume_epoch")
        resume_epoch = -1 if raw_epoch is None else int(raw_epoch)  # 0 is an epoch to resume from, not "none"
        if s.role == "platform":
            Xs = np.concatenate([s.tables[n].X[s.splits[n][0]] for n in s.lenders])
            s.mean, s.std = _standardizer(len(Xs), Xs.sum(0), (Xs * Xs).sum(0))
            for n in s.lenders:
                s.Z[n] = _standardize(s.tables[n].X, s.mean, s.std)
            dim = s.Z[s.lenders[0]].shape[1]
        else:
            if len(s.lenders) > 1 and s.index != 0:
                sealed = _f(params, "sealed_seed")
                s.common_seed = open_from_peer(self.identity, sealed, s.lenders[0], f"vertical-seed/{s.run_id}",
                                               key=s.env_key)
            elif len(s.lenders) == 1:
                s.common_seed = secrets.token_bytes(32)
            dim = s.tables[self.name].X.shape[1] + 1
        s.w = np.zeros(dim)
        s.best_w = s.w.copy()
        s.opt = _Adam(dim, lr, l2)
        if resume_epoch >= 0:
            self._load(s, resume_epoch)
        if s.role == "platform":
            return TaskReply({"dim": dim})
        t = s.tables[self.name]
        Xt = t.X[s.splits[self.name][0]]
        assert t.y is not None
        mom = np.concatenate([[len(Xt)], Xt.sum(0), (Xt * Xt).sum(0), [float(t.y[s.splits[self.name][0]].sum())]])
        mask = uniform_masks(len(mom), _seed_stream(s.common_seed, "moments", s.index))
        masked = [(a + b) % MOD for a, b in zip(encode_fixed(mom), encode_fixed(mask), strict=True)]
        return TaskReply({"dim": dim}, frames_bytes([u128_frame(0, masked)]))

    def _scaler(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx, "lender")
        fr = _one(parse_frames(ctx.read_payload()), F_U128)
        if fr is None:
            raise ProtocolError("vertical.scaler carries no moments")
        total = u128_of(fr)
        for i in range(len(s.lenders)):
            mask = encode_fixed(uniform_masks(len(total), _seed_stream(s.common_seed, "moments", i)))
            total = [(a - b) % MOD for a, b in zip(total, mask, strict=True)]
        mom = decode_fixed(total)
        p = (len(mom) - 2) // 2
        s.mean, s.std = _standardizer(mom[0], mom[1 : 1 + p], mom[1 + p : 1 + 2 * p])
        Z = _standardize(s.tables[self.name].X, s.mean, s.std)
        s.Z[self.name] = np.hstack([np.ones((len(Z), 1)), Z])
        assert s.opt is not None
        if s.opt.t == 0 and not s.w.any():  # a fresh run starts at the pooled bad rate (not PD 0.5)
            rate = min(max(mom[-1] / max(mom[0], 1.0), 1e-4), 1 - 1e-4)
            s.w[0] = s.best_w[0] = float(np.log(rate / (1.0 - rate)))
        return TaskReply({"features": p})

    # -- carried updates

    def _apply(self, s: _Session, masked: np.ndarray, key: str) -> None:
        pend = s.pending.pop(key, None)
        if pend is None:
            raise ProtocolError(f"vertical: an update arrived for {key!r} with no pending step")
        mask_total, total = pend
        g = (masked - mask_total) / total
        assert s.opt is not None
        s.w = s.opt.step(s.w, g)

    def _carry(self, s: _Session, frames: Sequence[Frame]) -> None:
        fr = _one(frames, F_F64, 1)
        if fr is not None:
            self._apply(s, f64_of(fr), "grad")
        elif "grad" in s.pending:
            raise ProtocolError("vertical: the update of the previous step is missing")

    # -- per step

    def _forward(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx, "platform")
        epoch, step = int(_f(params, "epoch")), int(_f(params, "step"))
        with s.lock:
            self._carry(s, parse_frames(ctx.read_payload()))
            out, us = [], {}
            for i, n in enumerate(s.lenders):
                rows = batch_rows(s.splits[n][0], s.steps, s.seed, i, epoch, step)
                us[n] = s.Z[n][rows] @ s.w
                # [[u]] and [[min(u^2, cap^2)]] (P knows u, so u^2 costs no ciphertext multiplication)
                ct = b"".join(frames_bytes([Frame(F_CKKS, 0, self._enc(s, _pad(us[n])).to_bytes()),
                                   Frame(F_CKKS, 1, self._enc(s, _pad(_u2(us[n]))).to_bytes())]))
                out.append(Frame(F_SEALED, i, self._seal(s, n, ct, "u", epoch, step)))
                ctx.check_cancelled()
            s.pending["u"] = us
        return TaskReply({}, frames_bytes(out))

    def _lender_terms(self, s: _Session, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(Z, c, alpha, beta) of rows: c = b + w_L . x_L, alpha = s(c)(1 - s(c)), beta = s(c) - y."""
        Z = s.Z[self.name][rows]
        y = s.tables[self.name].y
        assert y is not None
        c = Z @ s.w
        sg = 1.0 / (1.0 + np.exp(-c))
        return Z, c, sg * (1.0 - sg), sg - y[rows]

    @staticmethod
    def _gamma(c: np.ndarray) -> np.ndarray:
        """The second-order coefficient of s(c + u) around c: s''(c) / 2 = s(1 - s)(1 - 2 s) / 2."""
        sg = 1.0 / (1.0 + np.exp(-c))
        out: np.ndarray = sg * (1.0 - sg) * (1.0 - 2.0 * sg) / 2.0
        return out

    def _residual(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx, "lender")
        epoch, step, total = int(_f(params, "epoch")), int(_f(params, "step")), float(_f(params, "total"))
        frames = parse_frames(ctx.read_payload())
        with s.lock:
            self._carry(s, frames)
            sealed = _one(frames, F_SEALED)
            if sealed is None:
                raise ProtocolError("vertical.residual carries no encrypted partial logits")
            uf = parse_frames(self._open(s, s.platform, sealed.body, "u", epoch, step))
            fu, fu2 = _one(uf, F_CKKS, 0), _one(uf, F_CKKS, 1)
            if fu is None or fu2 is None:
                raise ProtocolError("vertical.residual: the sealed partial logits lack [[u]] or [[u^2]]")
            enc_u, enc_u2 = self._parse_ct(s, fu.body), self._parse_ct(s, fu2.body)
            rows = batch_rows(s.splits[self.name][0], s.steps, s.seed, s.index, epoch, step)
            if enc_u.length != len(_pad(rows)) or enc_u2.length != enc_u.length:
                raise ProtocolError(f"vertical: {enc_u.length} partial logits for a batch of {len(rows)}")
            Z, c, alpha, beta = self._lender_terms(s, rows)
            gamma = self._gamma(c)
            ag = b"".join(frames_bytes([Frame(F_CKKS, 0, self._enc(s, _pad(alpha)).to_bytes()),
                               Frame(F_CKKS, 1, self._enc(s, _pad(gamma)).to_bytes())]))
            out = [
                Frame(F_SEALED, 0, self._seal(s, s.platform, ag, "alpha", epoch, step)),
                Frame(F_SEALED, 1, self._seal(s, s.platform, self._enc(s, _pad(beta)).to_bytes(), "beta", epoch,
                                              step)),
            ]
            cols = Z.shape[1]
            masks = uniform_masks(cols * SLOTS, _seed_stream(s.common_seed, "grad", epoch, step, s.index))
            masks = masks.reshape(cols, SLOTS)
            for j in range(cols):
                # d ~ s(c + u) - y = beta + alpha u + gamma u^2: the column's slots x_j * d, folded, masked
                prod = _fold(he.add([he.multiply_plain(enc_u, _pad(Z[:, j] * alpha)),
                                     he.multiply_plain(enc_u2, _pad(Z[:, j] * gamma))]))
                clear = _pad(Z[:, j] * beta).reshape(-1, SLOTS).sum(axis=0)
                out.append(Frame(F_CKKS, j, _add_plain(prod, clear + masks[j]).to_bytes()))
                ctx.check_cancelled()
            mask_total = np.zeros(cols)
            for i in range(len(s.lenders)):
                m = masks if i == s.index else uniform_masks(
                    cols * SLOTS, _seed_stream(s.common_seed, "grad", epoch, step, i)).reshape(cols, SLOTS)
                mask_total += m.sum(axis=1)
            s.pending["grad"] = (mask_total, total)
        return TaskReply({}, frames_bytes(out))

    def _open_agb(self, s: _Session, frames: Sequence[Frame], i: int, n: int, epoch: int,
                  step: int) -> tuple[he.EncryptedVector, he.EncryptedVector, he.EncryptedVector]:
        """A training step's [[alpha]], [[beta]], [[gamma]] of lender ``i`` (alpha and gamma sealed together)."""
        fa, fb = _one(frames, F_SEALED, 2 * i), _one(frames, F_SEALED, 2 * i + 1)
        name = s.lenders[i]
        if fa is None or fb is None:
            raise ProtocolError(f"vertical: the encrypted residual terms of lender {name!r} are missing")
        ag = parse_frames(self._open(s, name, fa.body, "alpha", epoch, step))
        f0, f1 = _one(ag, F_CKKS, 0), _one(ag, F_CKKS, 1)
        if f0 is None or f1 is None:
            raise ProtocolError(f"vertical: lender {name!r} sent no [[alpha]] or [[gamma]]")
        a, g = self._parse_ct(s, f0.body), self._parse_ct(s, f1.body)
        b = self._parse_ct(s, self._open(s, name, fb.body, "beta", epoch, step))
        if a.length != len(_pad(np.zeros(n))) or b.length != a.length or g.length != a.length:
            raise ProtocolError(f"vertical: {a.length} residual terms from {name!r} for {n} rows")
        return a, b, g

    def _backward(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx, "platform")
        epoch, step, total = int(_f(params, "epoch")), int(_f(params, "step")), float(_f(params, "total"))
        frames = parse_frames(ctx.read_payload())
        p = s.w.size
        out: list[Frame] = []
        with s.lock:
            us = s.pending.pop("u", None)
            if us is None:
                raise ProtocolError("vertical.backward without a forward step")
            mask_total = np.zeros(p)
            for i, n in enumerate(s.lenders):
                rows = batch_rows(s.splits[n][0], s.steps, s.seed, i, epoch, step)
                a, b, g = self._open_agb(s, frames, i, len(rows), epoch, step)
                Z, u = s.Z[n][rows], us[n]
                masks = uniform_masks(p * SLOTS).reshape(p, SLOTS)
                mask_total += masks.sum(axis=1)
                for j in range(p):
                    # x_j * (alpha u + beta + gamma u^2), folded, masked: plaintext products at one level
                    prod = _fold(he.add([he.multiply_plain(a, _pad(Z[:, j] * u)), he.multiply_plain(b, _pad(Z[:, j])),
                                         he.multiply_plain(g, _pad(Z[:, j] * _u2(u)))]))
                    out.append(Frame(F_CKKS, j, _add_plain(prod, masks[j]).to_bytes()))
                    ctx.check_cancelled()
            s.pending["grad"] = (mask_total, total)
        return TaskReply({}, frames_bytes(out))

    # -- evaluation

    def _eval_lender(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        """Not final: the lender's half of the exact validation loss, sealed to the platform:
        ``[[a_k]]`` with ``l(c + u) = sum_k a_k T_k(u / bound)`` (:func:`loss_coefficients`); nothing for
        the arbiter. Final: [[z + m]] from the platform's [[u]]."""
        s = self._session(ctx, "lender")
        epoch, final = int(_f(params, "epoch")), bool(params.get("final", False))
        frames = parse_frames(ctx.read_payload())
        with s.lock:
            self._carry(s, frames)
            val = s.splits[self.name][1]
            if len(val) == 0:
                return TaskReply({"rows": 0})
            w = s.w
            if final:
                s.w = s.best_w
                _z, c, _a, _b = self._lender_terms(s, val)
                s.w = w
                sealed = _one(frames, F_SEALED)
                if sealed is None:
                    raise ProtocolError("vertical.eval_lender carries no encrypted partial logits")
                enc_u = self._parse_ct(s, self._open(s, s.platform, sealed.body, "val", epoch, -1))
                if enc_u.length != len(val):
                    raise ProtocolError("vertical: validation partial logits do not match the validation rows")
                m = uniform_masks(len(val))
                y = s.tables[self.name].y
                assert y is not None
                s.pending["reveal"] = (m, y[val].astype(np.float64))
                ct = _add_plain(enc_u, c + m)
                return TaskReply({"rows": len(val)}, frames_bytes([Frame(F_CKKS, 0, ct.to_bytes())]))
            _z, c, _a, _b = self._lender_terms(s, val)
            y = s.tables[self.name].y
            assert y is not None
            # the exact loss l(c + u) = sum_k a_k(c, y) T_k(u / bound): the a_k for the platform, sealed
            coef = self._enc(s, _pad(loss_coefficients(c, y[val]))).to_bytes()
            out = [Frame(F_SEALED, 0, self._seal(s, s.platform, coef, "loss-val", epoch, -1))]
        return TaskReply({"rows": len(val)}, frames_bytes(out))

    def _eval_platform(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        """Not final: per lender ``[[sum_k a_k T_k(u / bound) + r]]`` folded, zero-sum masks ``r``: the
        arbiter decrypts the lender's exact validation log-loss (a sum) and nothing else. Final: sealed [[u]]."""
        s = self._session(ctx, "platform")
        epoch, final = int(_f(params, "epoch")), bool(params.get("final", False))
        frames = parse_frames(ctx.read_payload())
        out: list[Frame] = []
        with s.lock:
            self._carry(s, frames)
            w = s.best_w if final else s.w
            for i, n in enumerate(s.lenders):
                val = s.splits[n][1]
                if len(val) == 0:
                    continue
                u = s.Z[n][val] @ w
                if final:
                    ct = self._enc(s, u).to_bytes()
                    out.append(Frame(F_SEALED, i, self._seal(s, n, ct, "val", epoch, -1)))
                    continue
                basis = loss_basis(u)
                fr = _one(frames, F_SEALED, 2 * i)
                if fr is None:
                    raise ProtocolError(f"vertical: the validation loss terms of lender {n!r} are missing")
                coef = self._parse_ct(s, self._open(s, n, fr.body, "loss-val", epoch, -1))
                if coef.length != len(_pad(basis)):
                    raise ProtocolError(f"vertical: {coef.length} loss terms from {n!r} for {len(val)} rows")
                m = uniform_masks(SLOTS)
                m[-1] -= float(m.sum())
                prod = _fold(he.multiply_plain(coef, _pad(basis)))
                out.append(Frame(F_CKKS, 0, _add_plain(prod, m).to_bytes()))
        return TaskReply({}, frames_bytes(out))

    def _reveal(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx, "lender")
        pend = s.pending.pop("reveal", None)
        fr = _one(parse_frames(ctx.read_payload()), F_F64, 0)
        if pend is None or fr is None:
            raise ProtocolError("vertical.reveal without a pending final evaluation")
        m, yv = pend
        z = f64_of(fr) - m
        p = 1.0 / (1.0 + np.exp(-z))
        if self.metrics is None or len(set(yv.tolist())) < 2:
            return TaskReply({"metrics": {"rows": len(yv)}})
        met = {k: float(v) for k, v in self.metrics(yv, p).items() if isinstance(v, int | float)}
        met["rows"] = len(yv)
        self._keep_validation_hist(ctx.run_id, yv, p)
        return TaskReply({"metrics": met})

    def _keep_validation_hist(self, run_id: str, y: np.ndarray, p: np.ndarray) -> None:
        """The best model's validation scores as counts per score bin by label, kept at this lender for
        ``coordinator report`` (only these counts ever leave it, as for horizontal models)."""
        from models import histograms as hm

        path = self.model_dir / run_id / VALIDATION_HIST
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"val": hm.histogram(y, p).to_params(), "n_val": len(y)}))
        os.replace(tmp, path)

    # -- checkpoints and output

    def _checkpoint(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        epoch, improved = int(_f(params, "epoch")), bool(params.get("improved", False))
        with s.lock:
            if s.pending.get("grad") is not None:
                raise ProtocolError("vertical.checkpoint while an update is pending")
            if improved:
                s.best_w = s.w.copy()
            assert s.opt is not None
            state = {"epoch": epoch, "w": s.w.tolist(), "best_w": s.best_w.tolist(), "opt": s.opt.to_dict()}
            path = self._state_path(s.run_id, epoch)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, path)
            # keep this epoch and the one before (the coordinator may have missed this one)
            self._state_path(s.run_id, epoch - 2).unlink(missing_ok=True)
        return TaskReply({"epoch": epoch})

    def _load(self, s: _Session, epoch: int) -> None:
        path = self._state_path(s.run_id, epoch)
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(
                f"no vertical checkpoint of epoch {epoch} for run {s.run_id!r} at party {self.name!r}"
            ) from None
        s.w, s.best_w = np.asarray(state["w"], float), np.asarray(state["best_w"], float)
        assert s.opt is not None
        s.opt.load(state["opt"])

    def _finish(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        t = next(iter(s.tables.values())) if s.role == "platform" else s.tables[self.name]
        w = s.best_w
        doc: dict[str, Any] = {
            "model_id": s.run_id,
            "version": str(_f(params, "version")),
            "party": self.name,
            "kind": MODEL_KIND,
            "dataset": t.dataset,
            "features": list(t.features),
            "weights": (w[1:] if s.role == "lender" else w).tolist(),
            "scaler": {"mean": s.mean.tolist(), "std": s.std.tolist()},
        }
        if t.columns is not None and t.base_features is not None:  # one-hot categoricals: encode at scoring
            doc["features"], doc["columns"] = list(t.base_features), [[j, c] for j, c in t.columns]
        if t.encoding is not None:  # WOE: scoring maps stored values to the WOE of their bins
            doc["encoding"] = t.encoding
        if s.role == "lender":
            doc["intercept"] = float(w[0])
        path = self.model_dir / s.run_id / "slice.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)
        with self._lock:
            self._sessions.pop(s.run_id, None)
        return TaskReply({"features": len(t.features)})

    def _abort(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        with self._lock:
            self._sessions.pop(ctx.run_id, None)
        return TaskReply({})

