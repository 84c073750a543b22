"""Vertical / hybrid training: coordinated logistic regression under CKKS, many lenders + one platform.

The joint model is ``z = b + w_L . x_L + w_P . x_P`` on PSI-aligned subjects. Every lender ``L_i``
holds labels and the shared lender schema ``x_L`` for its own aligned subjects (its pairwise PSI run
with the platform); the platform ``P`` holds ``x_P`` for the same subjects, one table per lender's run.
``w_L`` and ``b`` are trained jointly by all lenders (identical copies), ``w_P`` by the platform. The
coordinator is the **arbiter**: it holds the run's CKKS secret key (:data:`~fedcore.crypto.he.DOT`,
no Galois keys, no relin keys: one plaintext multiplication per value, no rotations) and only ever
decrypts values that a party has masked.

Residual: the lender linearizes the sigmoid around its *own* partial logit ``c = b + w_L . x_L`` (known
exactly) so only the platform's part ``u = w_P . x_P`` is approximated:
``d = s(c + u) - y ~ beta + alpha * u`` with ``alpha = s(c)(1 - s(c))``, ``beta = s(c) - y``. At
``w = 0`` this is FATE's Taylor expansion (``0.5 + 0.25 z - y``); later it is exact in ``c`` (on FATE's
hetero split: AUC 0.731 against 0.726 for Taylor-at-0 and 0.7315 for exact LR, see docs/vertical.md).
Mini-batches, Adam at every party on its own slice (per coordinate, so equal to centralized Adam on
this gradient), early stopping on the validation loss ``l(c) + beta u + alpha u^2 / 2`` (second order
around ``c``). Packing: one slot per subject, vectors padded to whole ciphertexts; after the per-column
plaintext products a column's ciphertexts are added slot-wise ("folded"), masked per slot and decrypted
by the arbiter, which sums the slots. No rotations, one multiplicative level.

Setup (once per session; a resumed run is a new session)::

    C -> all      vertical.setup    public CKKS context (DOT), run parameters     -> row counts, feature
                                                                                   names, data hash, a fresh
                                                                                   X25519 envelope key
    C -> L_1      vertical.keys     all envelope keys                            -> the lenders' common seed,
                                                                                   sealed to each other lender
    C -> all      vertical.start    envelope keys, sealed seed, step plan        -> lenders: moments masked
                                                                                   by the common seed (mod 2^128)
    C -> L_i      vertical.scaler   sum of the masked moments                     (lenders unmask: shared scaler)

Per step ``t`` (a constant number of messages: 2 to the platform and 1 to each lender; the carried
update of step ``t-1`` rides on the messages of step ``t``)::

    C -> P    vertical.forward   masked sums of P's gradient of step t-1 (float64, masked by P)
    P -> C    [[u_i]] for lender i's batch, sealed to L_i (envelope; C holds the CKKS key but cannot open it)
    C -> L_i  vertical.residual  the sealed [[u_i]], the masked lender aggregate of step t-1
    L_i -> C  [[alpha]], [[beta]] sealed to P; per column j of (1, x_L):
              fold([[u]] * (x_j alpha)) + fold(x_j beta) + r_j, r_j per slot from the lenders' common seed
    C -> P    vertical.backward  the sealed [[alpha]], [[beta]] of every lender
    P -> C    per lender and column j of x_P: fold([[alpha]] * (x_j u) + [[beta]] * x_j) + s_j, s private to P
    C         decrypts, sums slots (and lenders): P's masked sum S_P + sum(s), lenders' S_L + sum(r)

Epoch end: ``vertical.eval_lender`` (L_i seals validation [[alpha]], [[beta]] to P and sends
``[[l(c) + r]]`` with zero-sum masks), ``vertical.eval_platform`` (P returns
``[[alpha u^2 / 2 + beta u + r]]``, zero-sum masks): C decrypts the slot sums = the validation loss;
``vertical.checkpoint``. At the end the parties use the best epoch: P seals ``[[u]]`` of lender i's
validation rows to L_i, L_i returns ``[[z + m]]`` masked per slot, C decrypts and returns the masked
values (``vertical.reveal``), L_i removes ``m`` and reports AUC / KS / bad rate on its own validation
rows; ``vertical.finish`` writes the slices.

**What each side learns** (semi-honest parties; coordinator not colluding with a party):

- *Coordinator (arbiter)*: row counts per lender (train / validation), feature counts and names, data
  hashes; per-slot values ``v + mask`` with masks uniform in ``[-2^30, 2^30]`` (statistical distance
  about ``|v| / 2^30`` per value); per step the *masked* gradient sums; per epoch the validation
  loss (an aggregate over all lenders' validation rows) split per lender into its lender-only term and
  its platform-dependent term; at the end each lender's validation AUC, KS and bad rate (reported in
  the job result). It relays ``[[u]]``, ``[[alpha]]`` and ``[[beta]]`` only inside envelopes it cannot
  open, and never sees a weight, a scaler, a label or a feature value.
- *Lender L_i*: its own data; ``[[u]]`` ciphertexts it cannot decrypt; per step the aggregate lender
  gradient ``sum_i X_L,i^T d_i`` over all lenders' batches (with one lender, FATE's guest gradient),
  which mixes in the aggregate ``X_L^T (alpha u)`` of the batch; the pooled lender scaler (pooled mean and
  std of the lender features) and all lenders' training row counts; at the end the joint score ``z``
  of its own validation subjects, hence ``u_P`` of those subjects (exactly what joint scoring reveals).
- *Platform P*: its own data; ``[[alpha]]``, ``[[beta]]`` ciphertexts it cannot decrypt; per step its own gradient
  ``sum_i X_P,i^T d_i`` (FATE's host gradient); row counts per lender. Never labels, residuals,
  per-subject gradients or lender weights.
- *The final model*: each slice is kept by its party (``HOME/models/<run_id>/slice.json``); w_P is
  known to the platform only, w_L and b to the lenders only. Scoring with it (protocol 4) reveals to the
  requesting lender the platform's partial logit of the scored subject.

Not covered: a coordinator colluding with a party (the arbiter's key decrypts every relayed
ciphertext if the envelope key leaks); an actively malicious coordinator swapping envelope keys
(keys are ephemeral per session and relayed; bind them to the parties' certificates for that).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedcore.crypto import he
from fedcore.crypto.envelope import EnvelopeAad, EnvelopePrivateKey, EnvelopePublicKey, open_sealed, seal
from fedcore.errors import FedcreditError, InvalidInput, NotFound, ProtocolError
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.messages import JSONValue, Task, TaskReply, TaskResult
from fedcore.protocol.tasks import HandlerRegistry, TaskContext

log = logging.getLogger(__name__)

SETUP, KEYS, START, SCALER, FORWARD, RESIDUAL, BACKWARD = (
    "vertical.setup", "vertical.keys", "vertical.start", "vertical.scaler",
    "vertical.forward", "vertical.residual", "vertical.backward",
)
EVAL_PLATFORM, EVAL_LENDER, REVEAL, CHECKPOINT, FINISH, ABORT = (
    "vertical.eval_platform", "vertical.eval_lender", "vertical.reveal",
    "vertical.checkpoint", "vertical.finish", "vertical.abort",
)
KINDS = (SETUP, KEYS, START, SCALER, FORWARD, RESIDUAL, BACKWARD, EVAL_PLATFORM, EVAL_LENDER, REVEAL,
         CHECKPOINT, FINISH, ABORT)
MASK = float(2**30)  # per-slot masks, uniform in [-MASK, MASK]
FIXED_BITS = 32  # fixed point for the masked moments, mod 2^128
MOD = 1 << 128
CLIP = 5.0  # standardized features are clipped to [-CLIP, CLIP]
MODEL_KIND = "joint-logistic"
SESSION_TTL_S = 24 * 3600

# ---- payload framing: u8 type | u32 tag | u64 length | body -----------------------------------------

F_CKKS, F_F64, F_SEALED, F_U128 = 1, 2, 3, 4
_FRAME = struct.Struct(">BIQ")


@dataclass(frozen=True)
class Frame:
    type: int
    tag: int
    body: bytes


def frames_bytes(frames: Iterable[Frame]) -> Iterator[bytes]:
    for f in frames:
        yield _FRAME.pack(f.type, f.tag, len(f.body))
        yield f.body


def parse_frames(data: bytes) -> list[Frame]:
    out: list[Frame] = []
    pos = 0
    while pos < len(data):
        if pos + _FRAME.size > len(data):
            raise ProtocolError("vertical payload is truncated (frame header)")
        t, tag, n = _FRAME.unpack_from(data, pos)
        pos += _FRAME.size
        if t not in (F_CKKS, F_F64, F_SEALED, F_U128) or pos + n > len(data):
            raise ProtocolError("vertical payload has a malformed frame")
        out.append(Frame(t, tag, data[pos : pos + n]))
        pos += n
    return out


def f64_frame(tag: int, arr: np.ndarray) -> Frame:
    return Frame(F_F64, tag, np.asarray(arr, dtype="<f8").tobytes())


def f64_of(frame: Frame) -> np.ndarray:
    if frame.type != F_F64 or len(frame.body) % 8:
        raise ProtocolError("expected a float64 frame")
    return np.frombuffer(frame.body, dtype="<f8").copy()


def _one(frames: Sequence[Frame], type_: int, tag: int | None = None) -> Frame | None:
    for f in frames:
        if f.type == type_ and (tag is None or f.tag == tag):
            return f
    return None


# ---- masks -----------------------------------------------------------------------------------------


def uniform_masks(n: int, stream: bytes | None = None) -> np.ndarray:
    """``n`` values uniform in [-MASK, MASK]: from os.urandom, or from SHAKE-256(stream) when given."""
    raw = os.urandom(8 * n) if stream is None else hashlib.shake_256(stream).digest(8 * n)
    u = (np.frombuffer(raw, dtype="<u8") >> np.uint64(11)).astype(np.float64) * 2.0**-53
    out: np.ndarray = (2.0 * u - 1.0) * MASK
    return out


def _seed_stream(seed: bytes, *label: object) -> bytes:
    return seed + b"|" + "|".join(str(x) for x in label).encode()


def encode_fixed(values: np.ndarray) -> list[int]:
    return [round(float(v) * 2**FIXED_BITS) % MOD for v in values]


def decode_fixed(values: Sequence[int]) -> np.ndarray:
    return np.array([((v + MOD // 2) % MOD - MOD // 2) / 2**FIXED_BITS for v in values], dtype=np.float64)


def u128_frame(tag: int, values: Sequence[int]) -> Frame:
    return Frame(F_U128, tag, b"".join(int(v % MOD).to_bytes(16, "big") for v in values))


def u128_of(frame: Frame) -> list[int]:
    if frame.type != F_U128 or len(frame.body) % 16:
        raise ProtocolError("expected a u128 frame")
    return [int.from_bytes(frame.body[i : i + 16], "big") for i in range(0, len(frame.body), 16)]


# ---- batch plan (every party derives the same plan from counts and the run seed) --------------------


def split_rows(n: int, val_fraction: float, seed: int, lender_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions) of a lender's aligned table."""
    perm = np.random.default_rng([seed, lender_index, 7]).permutation(n)
    n_val = math.ceil(val_fraction * n) if val_fraction > 0 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def batch_rows(train: np.ndarray, steps: int, seed: int, lender_index: int, epoch: int, step: int) -> np.ndarray:
    order = np.random.default_rng([seed, lender_index, epoch, 11]).permutation(len(train))
    return np.asarray(train[np.array_split(order, steps)[step]])


def batch_sizes(n_train: int, steps: int) -> list[int]:
    return [len(a) for a in np.array_split(np.arange(n_train), steps)]


# ---- the party's data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A party's side of one PSI run, rows in the joint PSI order. ``y`` only at lenders."""

    X: np.ndarray
    features: list[str]
    dataset: str
    y: np.ndarray | None = None

    def data_hash(self) -> str:
        h = hashlib.sha256(json.dumps([self.dataset, self.features]).encode())
        h.update(np.ascontiguousarray(self.X, dtype="<f8").tobytes())
        if self.y is not None:
            h.update(np.ascontiguousarray(self.y, dtype="<i1").tobytes())
        return h.hexdigest()


class VerticalSource(Protocol):
    """This party's aligned data for a PSI run (``dataset`` None: the party's default)."""

    def vertical_table(self, psi_run: str, dataset: str | None, *, labels: bool) -> Table: ...


# ---- party side ------------------------------------------------------------------------------------


class _Adam:
    def __init__(self, dim: int, lr: float, l2: float) -> None:
        self.m = np.zeros(dim)
        self.v = np.zeros(dim)
        self.t = 0
        self.lr = lr
        self.l2 = l2

    def step(self, w: np.ndarray, g: np.ndarray) -> np.ndarray:
        g = g + self.l2 * w
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        mh = self.m / (1 - 0.9**self.t)
        vh = self.v / (1 - 0.999**self.t)
        out: np.ndarray = w - self.lr * mh / (np.sqrt(vh) + 1e-8)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"m": self.m.tolist(), "v": self.v.tolist(), "t": self.t}

    def load(self, d: Mapping[str, Any]) -> None:
        self.m, self.v, self.t = np.asarray(d["m"], float), np.asarray(d["v"], float), int(d["t"])


@dataclass
class _Session:
    run_id: str
    role: str  # "lender" | "platform"
    me: str
    lenders: list[str]
    platform: str
    pub: he.CkksPublicContext
    env_key: EnvelopePrivateKey
    seed: int
    steps: int = 0
    tables: dict[str, Table] = field(default_factory=dict)  # lender name -> table (one at a lender)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    Z: dict[str, np.ndarray] = field(default_factory=dict)  # standardized features (lender: with a 1 column)
    peer_keys: dict[str, EnvelopePublicKey] = field(default_factory=dict)
    common_seed: bytes = b""
    train_rows: dict[str, int] = field(default_factory=dict)
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    best_w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    opt: _Adam | None = None
    pending: dict[str, Any] = field(default_factory=dict)  # masks awaiting their masked sums
    created: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def index(self) -> int:
        return self.lenders.index(self.me) if self.role == "lender" else -1


def _f(params: Mapping[str, JSONValue], key: str, default: Any = None) -> Any:
    v = params.get(key, default)
    if v is None:
        raise InvalidInput(f"vertical step is missing parameter {key!r}")
    return v


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
    ) -> None:
        """``metrics(y, p)``: the lender's validation report of the final model (e.g.
        :func:`models.metrics.evaluate`); without it a lender reports only its row count."""
        self.name = name
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

    def _aad(self, s: _Session, sender: str, recipient: str, what: str, epoch: int, step: int) -> EnvelopeAad:
        return EnvelopeAad(sender, recipient, f"{s.run_id}/{what}/{epoch}/{step}")

    def _seal(self, s: _Session, to: str, data: bytes, what: str, epoch: int, step: int) -> bytes:
        return seal(s.peer_keys[to], data, self._aad(s, self.name, to, what, epoch, step))

    def _open(self, s: _Session, frm: str, data: bytes, what: str, epoch: int, step: int) -> bytes:
        return open_sealed(s.env_key, data, self._aad(s, frm, self.name, what, epoch, step))

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
                                           labels=True)
            if t.y is None:
                raise InvalidInput(f"lender {self.name!r} has no labels for run {ctx.run_id!r}")
            s.tables[self.name] = t
        elif role == "platform":
            for name in lenders:
                s.tables[name] = self.source.vertical_table(
                    str(psi_runs[name]), None if dataset is None else str(dataset), labels=False)
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
            "envelope_key": s.env_key.public_key().to_bytes().hex(),
        })

    def _set_keys(self, s: _Session, keys: Mapping[str, Any]) -> None:
        for name, hexkey in keys.items():
            if name != self.name:
                s.peer_keys[str(name)] = EnvelopePublicKey.from_bytes(bytes.fromhex(str(hexkey)))

    def _keys(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx, "lender")
        if s.index != 0:
            raise InvalidInput("only the first lender makes the lenders' common seed")
        self._set_keys(s, dict(_f(params, "keys")))
        s.common_seed = secrets.token_bytes(32)
        sealed = {
            n: self._seal(s, n, s.common_seed, "seed", 0, 0).hex() for n in s.lenders if n != self.name
        }
        return TaskReply({"sealed_seed": sealed})

    def _start(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        self._set_keys(s, dict(_f(params, "keys")))
        s.steps = int(_f(params, "steps"))
        s.train_rows = {str(k): int(v) for k, v in dict(_f(params, "train_rows")).items()}
        lr, l2 = float(_f(params, "lr")), float(params.get("l2") or 0.0)
        resume_epoch = int(params.get("resume_epoch", -1) or -1)
        if s.role == "platform":
            Xs = np.concatenate([s.tables[n].X[s.splits[n][0]] for n in s.lenders])
            s.mean, s.std = _standardizer(len(Xs), Xs.sum(0), (Xs * Xs).sum(0))
            for n in s.lenders:
                s.Z[n] = _standardize(s.tables[n].X, s.mean, s.std)
            dim = s.Z[s.lenders[0]].shape[1]
        else:
            if len(s.lenders) > 1 and s.index != 0:
                sealed = bytes.fromhex(str(_f(params, "sealed_seed")))
                s.common_seed = self._open(s, s.lenders[0], sealed, "seed", 0, 0)
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
        mom = np.concatenate([[len(Xt)], Xt.sum(0), (Xt * Xt).sum(0)])
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
        p = (len(mom) - 1) // 2
        s.mean, s.std = _standardizer(mom[0], mom[1 : 1 + p], mom[1 + p :])
        Z = _standardize(s.tables[self.name].X, s.mean, s.std)
        s.Z[self.name] = np.hstack([np.ones((len(Z), 1)), Z])
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
                ct = self._enc(s, _pad(us[n])).to_bytes()
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

    def _residual(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx, "lender")
        epoch, step, total = int(_f(params, "epoch")), int(_f(params, "step")), float(_f(params, "total"))
        frames = parse_frames(ctx.read_payload())
        with s.lock:
            self._carry(s, frames)
            sealed = _one(frames, F_SEALED)
            if sealed is None:
                raise ProtocolError("vertical.residual carries no encrypted partial logits")
            enc_u = self._parse_ct(s, self._open(s, s.platform, sealed.body, "u", epoch, step))
            rows = batch_rows(s.splits[self.name][0], s.steps, s.seed, s.index, epoch, step)
            if enc_u.length != len(_pad(rows)):
                raise ProtocolError(f"vertical: {enc_u.length} partial logits for a batch of {len(rows)}")
            Z, _c, alpha, beta = self._lender_terms(s, rows)
            out = [
                Frame(F_SEALED, 0, self._seal(s, s.platform, self._enc(s, _pad(alpha)).to_bytes(), "alpha", epoch,
                                              step)),
                Frame(F_SEALED, 1, self._seal(s, s.platform, self._enc(s, _pad(beta)).to_bytes(), "beta", epoch,
                                              step)),
            ]
            cols = Z.shape[1]
            masks = uniform_masks(cols * SLOTS, _seed_stream(s.common_seed, "grad", epoch, step, s.index))
            masks = masks.reshape(cols, SLOTS)
            for j in range(cols):
                # d ~ s(c + u) - y = beta + alpha * u: the column's slots x_j * d, folded, masked
                prod = _fold(he.multiply_plain(enc_u, _pad(Z[:, j] * alpha)))
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

    def _open_ab(self, s: _Session, frames: Sequence[Frame], i: int, n: int, what: str, epoch: int,
                 step: int) -> tuple[he.EncryptedVector, he.EncryptedVector]:
        fa, fb = _one(frames, F_SEALED, 2 * i), _one(frames, F_SEALED, 2 * i + 1)
        name = s.lenders[i]
        if fa is None or fb is None:
            raise ProtocolError(f"vertical: the encrypted residual terms of lender {name!r} are missing")
        a = self._parse_ct(s, self._open(s, name, fa.body, "alpha" + what, epoch, step))
        b = self._parse_ct(s, self._open(s, name, fb.body, "beta" + what, epoch, step))
        if a.length != len(_pad(np.zeros(n))) or b.length != a.length:
            raise ProtocolError(f"vertical: {a.length} residual terms from {name!r} for {n} rows")
        return a, b

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
                a, b = self._open_ab(s, frames, i, len(rows), "", epoch, step)
                Z, u = s.Z[n][rows], us[n]
                masks = uniform_masks(p * SLOTS).reshape(p, SLOTS)
                mask_total += masks.sum(axis=1)
                for j in range(p):
                    # x_j * (alpha * u + beta), folded, masked: two plaintext products at the same level
                    prod = _fold(he.add([he.multiply_plain(a, _pad(Z[:, j] * u)), he.multiply_plain(b, _pad(Z[:, j]))]))
                    out.append(Frame(F_CKKS, j, _add_plain(prod, masks[j]).to_bytes()))
                    ctx.check_cancelled()
            s.pending["grad"] = (mask_total, total)
        return TaskReply({}, frames_bytes(out))

    # -- evaluation

    def _eval_lender(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        """Not final: sealed [[alpha]], [[beta]] of the validation rows for the platform and
        [[l(c) + r]] (zero-sum masks) for the arbiter. Final: [[z + m]] from the platform's [[u]]."""
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
            _z, c, alpha, beta = self._lender_terms(s, val)
            y = s.tables[self.name].y
            assert y is not None
            ell = np.logaddexp(0.0, c) - y[val] * c  # logistic loss at the lender's own partial logit
            m = uniform_masks(SLOTS)
            m[-1] -= float(m.sum())
            out = [
                Frame(F_SEALED, 0, self._seal(s, s.platform, self._enc(s, _pad(alpha)).to_bytes(), "alpha-val",
                                              epoch, -1)),
                Frame(F_SEALED, 1, self._seal(s, s.platform, self._enc(s, _pad(beta)).to_bytes(), "beta-val",
                                              epoch, -1)),
                Frame(F_CKKS, 0, self._enc(s, _pad(ell).reshape(-1, SLOTS).sum(axis=0) + m).to_bytes()),
            ]
        return TaskReply({"rows": len(val)}, frames_bytes(out))

    def _eval_platform(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        """Not final: per lender [[0.5 alpha u^2 + beta u + r]] (zero-sum masks), the second-order
        expansion of the validation loss around the lender's partial logit. Final: sealed [[u]]."""
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
                a, b = self._open_ab(s, frames, i, len(val), "-val", epoch, -1)
                m = uniform_masks(SLOTS)
                m[-1] -= float(m.sum())
                prod = _fold(he.add([he.multiply_plain(a, _pad(0.5 * u * u)), he.multiply_plain(b, _pad(u))]))
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
        return TaskReply({"metrics": met})

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


SLOTS = he.DOT.slots


def _pad(a: np.ndarray) -> np.ndarray:
    """``a`` padded with zeros to a whole number of ciphertexts (at least one)."""
    out = np.zeros(max(1, math.ceil(len(a) / SLOTS)) * SLOTS)
    out[: len(a)] = a
    return out


def _fold(v: he.EncryptedVector) -> he.EncryptedVector:
    """Slot-wise sum of a padded vector's ciphertexts: one ciphertext with the same total over slots
    (masked, serialized and decrypted once instead of once per ciphertext)."""
    acc = v.ciphertexts[0] + v.ciphertexts[1] if len(v.ciphertexts) > 1 else v.ciphertexts[0]
    for ct in v.ciphertexts[2:]:
        acc.add_(ct)
    return he.EncryptedVector((acc,), acc.size(), v.context_fingerprint)


def _add_plain(v: he.EncryptedVector, plain: np.ndarray) -> he.EncryptedVector:
    """Element-wise ``[[v]] + plain`` (plain float vector of ``v``'s length); keeps the level."""
    arr = np.asarray(plain, dtype=np.float64)
    if arr.shape != (v.length,):
        raise InvalidInput(f"plain vector has shape {arr.shape}, expected ({v.length},)")
    cts, pos = [], 0
    for ct in v.ciphertexts:
        n = ct.size()
        cts.append(ct + arr[pos : pos + n].tolist())
        pos += n
    return he.EncryptedVector(tuple(cts), v.length, v.context_fingerprint)


def _standardizer(n: float, s1: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = max(float(n), 1.0)
    mean = np.asarray(s1, float) / n
    var = np.maximum(np.asarray(s2, float) / n - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std < 1e-9 * np.maximum(1.0, np.abs(mean)), 1.0, std)
    return mean, std


def _standardize(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip((np.asarray(X, float) - mean) / std, -CLIP, CLIP))


def score_slices(slices: Sequence[Mapping[str, Any]], Xs: Sequence[np.ndarray]) -> np.ndarray:
    """Joint logit from slices and each party's raw feature matrix (for tests and local checks)."""
    z = np.zeros(len(Xs[0]))
    for sl, X in zip(slices, Xs, strict=True):
        Z = _standardize(X, np.asarray(sl["scaler"]["mean"]), np.asarray(sl["scaler"]["std"]))
        z += Z @ np.asarray(sl["weights"], float) + float(sl.get("intercept", 0.0))
    return z


# ---- coordinator side ------------------------------------------------------------------------------


@dataclass
class VerticalConfig:
    epochs: int = 10
    batch_size: int = 2048
    lr: float = 0.05
    l2: float = 0.0
    val_fraction: float = 0.2
    patience: int = 3
    min_delta: float = 1e-4
    seed: int = 0
    dataset: str | None = None
    timeout_s: float = 600.0

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 16 or not 0 <= self.val_fraction < 0.9 or not self.lr > 0:
            raise InvalidInput("vertical: need epochs >= 1, batch_size >= 16, 0 <= val_fraction < 0.9, lr > 0")


@dataclass
class EpochReport:
    epoch: int
    epochs: int
    val_loss: float
    seconds: float
    improved: bool


@dataclass
class VerticalResult:
    run_id: str
    epochs_run: int
    best_epoch: int
    history: list[dict[str, float]]
    metrics: dict[str, dict[str, float]]  # lender -> validation metrics of the final model
    parties: dict[str, dict[str, Any]]  # party -> role, features (names), dataset, data hash, rows
    seconds: float
    version: str = "1"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "version": self.version, "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "history": self.history, "metrics": self.metrics, "parties": self.parties,
            "seconds": round(self.seconds, 3),
        }


class _Arbiter:
    """The coordinator's key: decrypts the masked per-slot values parties send it."""

    def __init__(self) -> None:
        self.sk = he.CkksSecretContext.generate(he.DOT)

    def slot_sums(self, frames: Sequence[Frame], dim: int) -> np.ndarray:
        out = np.zeros(dim)
        for f in frames:
            if f.type != F_CKKS:
                continue
            if f.tag >= dim:
                raise ProtocolError(f"vertical: gradient column {f.tag} out of range")
            out[f.tag] += float(he.decrypt_vector(self.sk, he.EncryptedVector.from_bytes(self.sk, f.body)).sum())
        return out

    def slots(self, frame: Frame) -> np.ndarray:
        return he.decrypt_vector(self.sk, he.EncryptedVector.from_bytes(self.sk, frame.body))


def run_vertical(
    channel: PartyChannel,
    run_id: str,
    lenders: Sequence[str],
    platform: str,
    psi_runs: Mapping[str, str],
    config: VerticalConfig | None = None,
    *,
    workdir: Path,
    version: str = "1",
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> VerticalResult:
    """Train (or, with ``resume``, continue from the last checkpointed epoch) a joint logistic model.

    ``workdir/<run_id>/vertical.json`` holds the coordinator's checkpoint (config, history, best epoch);
    each party checkpoints its own slice. Any party failing fails the run with its name in the error.
    """
    say = progress or (lambda _m: None)
    ckpt_path = Path(workdir) / run_id / "vertical.json"
    if resume:
        try:
            ck = json.loads(ckpt_path.read_text())
        except FileNotFoundError:
            raise NotFound(f"vertical run {run_id!r} has no checkpoint to resume from") from None
        config = VerticalConfig(**ck["config"])
        lenders, platform, psi_runs = ck["lenders"], ck["platform"], ck["psi_runs"]
        version = ck["version"]
    else:
        ck = {"epoch": -1, "history": [], "best_loss": None, "best_epoch": -1, "bad": 0}
    cfg = config or VerticalConfig()
    cfg.check()
    lenders = list(lenders)
    if not lenders or platform in lenders or len(set(lenders)) != len(lenders):
        raise InvalidInput("vertical: need one or more distinct lenders and a platform that is not a lender")
    missing = [n for n in lenders if n not in psi_runs]
    if missing:
        raise InvalidInput(f"vertical: no PSI run for lenders {', '.join(missing)}")
    everyone = [*lenders, platform]
    t0 = time.monotonic()
    arb = _Arbiter()

    def task(kind: str, params: Mapping[str, JSONValue], payload: Iterable[bytes] | None = None) -> Task:
        return Task(kind, params, run_id=run_id, timeout_s=cfg.timeout_s, payload=payload)

    def run_one(party: str, t: Task) -> TaskResult:
        return channel.run(party, t)

    try:
        base = {"lenders": lenders, "platform": platform, "psi_runs": dict(psi_runs), "seed": cfg.seed,
                "val_fraction": cfg.val_fraction, "dataset": cfg.dataset}
        pub = arb.sk.public_context().serialize()
        setup = channel.run_all({
            n: task(SETUP, {**base, "role": "platform" if n == platform else "lender"}, [pub]) for n in everyone
        })
        rows = {n: int(setup[n].params["rows"][n]) for n in lenders}
        train_rows = {n: int(setup[n].params["train_rows"][n]) for n in lenders}
        for n in lenders:
            if int(setup[platform].params["rows"][n]) != rows[n]:
                raise ProtocolError(
                    f"vertical: lender {n!r} has {rows[n]} aligned rows but the platform has "
                    f"{setup[platform].params['rows'][n]} for PSI run {psi_runs[n]!r}"
                )
            if train_rows[n] < 1:
                raise InvalidInput(f"vertical: lender {n!r} has no training rows")
        steps = max(1, max(math.ceil(train_rows[n] / cfg.batch_size) for n in lenders))
        keys = {n: str(setup[n].params["envelope_key"]) for n in everyone}
        sealed: dict[str, str] = {}
        if len(lenders) > 1:
            sealed = dict(run_one(lenders[0], task(KEYS, {"keys": keys})).params["sealed_seed"])
        start_params = {"keys": keys, "steps": steps, "train_rows": train_rows, "lr": cfg.lr, "l2": cfg.l2,
                        "resume_epoch": int(ck["epoch"]) if resume else -1}
        started = channel.run_all({
            n: task(START, {**start_params, "sealed_seed": sealed.get(n, "")}) for n in everyone
        })
        moments: list[int] | None = None
        for n in lenders:
            fr = _one(parse_frames(started[n].read_payload()), F_U128)
            if fr is None:
                raise ProtocolError(f"vertical: lender {n!r} sent no masked moments")
            vals = u128_of(fr)
            moments = vals if moments is None else [(a + b) % MOD for a, b in zip(moments, vals, strict=True)]
        assert moments is not None
        channel.run_all({n: task(SCALER, {}, frames_bytes([u128_frame(0, moments)])) for n in lenders})
        dim_p = int(started[platform].params["dim"])
        dim_l = int(started[lenders[0]].params["dim"])
        sizes = {n: batch_sizes(train_rows[n], steps) for n in lenders}
        say(f"vertical run {run_id}: {len(lenders)} lender(s) + {platform}, {sum(rows.values())} aligned rows, "
            f"{steps} steps per epoch")

        carry_p: list[Frame] = []
        carry_l: list[Frame] = []
        history: list[dict[str, float]] = list(ck["history"])
        first_epoch = int(ck["epoch"]) + 1
        epoch = first_epoch - 1
        for epoch in range(first_epoch, cfg.epochs):
            te = time.monotonic()
            for step in range(steps):
                sp = {"epoch": epoch, "step": step, "total": sum(sizes[n][step] for n in lenders)}
                fwd = run_one(platform, task(FORWARD, sp, frames_bytes(carry_p)))
                ufr = {f.tag: f for f in parse_frames(fwd.read_payload()) if f.type == F_SEALED}
                res = channel.run_all({
                    n: task(RESIDUAL, sp, frames_bytes([ufr[i], *carry_l])) for i, n in enumerate(lenders)
                })
                lender_frames, ab_frames = _split_sealed(res, lenders)
                back = run_one(platform, task(BACKWARD, sp, frames_bytes(ab_frames)))
                carry_p = [f64_frame(1, arb.slot_sums(parse_frames(back.read_payload()), dim_p))]
                carry_l = [f64_frame(1, arb.slot_sums(lender_frames, dim_l))]
            val_loss, _ = _validate(channel, arb, task, lenders, platform, epoch, carry_p, carry_l, final=False)
            carry_p, carry_l = [], []
            n_val = sum(rows[n] - train_rows[n] for n in lenders)
            mean_loss = val_loss / max(n_val, 1)
            best = ck["best_loss"]
            improved = best is None or mean_loss < best - cfg.min_delta
            if improved:
                ck["best_loss"], ck["best_epoch"], ck["bad"] = mean_loss, epoch, 0
            else:
                ck["bad"] = int(ck["bad"]) + 1
            channel.run_all({n: task(CHECKPOINT, {"epoch": epoch, "improved": improved}) for n in everyone})
            secs = time.monotonic() - te
            history.append({"epoch": epoch, "val_loss": round(mean_loss, 6), "seconds": round(secs, 3)})
            ck.update(epoch=epoch, history=history)
            _save_ckpt(ckpt_path, ck, cfg, lenders, platform, psi_runs, version)
            say(f"epoch {epoch + 1}/{cfg.epochs}: validation loss {mean_loss:.5f}"
                f"{' (best)' if improved else ''} ({secs:.2f} s)")
            if on_epoch:
                on_epoch(EpochReport(epoch, cfg.epochs, mean_loss, secs, improved))
            if int(ck["bad"]) >= cfg.patience:
                say(f"early stop: no improvement for {cfg.patience} epochs")
                break
        _, metrics = _validate(channel, arb, task, lenders, platform, epoch + 1, [], [], final=True)
        channel.run_all({n: task(FINISH, {"version": version}) for n in everyone})
    except FedcreditError:
        _abort(channel, everyone, run_id)
        raise
    parties = {
        n: {"role": "platform" if n == platform else "lender", "features": list(setup[n].params["features"]),
            "dataset": str(setup[n].params["dataset"]), "data_hash": str(setup[n].params["data_hash"]),
            "rows": int(sum(dict(setup[n].params["rows"]).values()))}
        for n in everyone
    }
    say(f"vertical run {run_id} done: best epoch {int(ck['best_epoch']) + 1}, "
        + ", ".join(f"{n} AUC {m.get('auc', float('nan')):.4f}" for n, m in metrics.items()))
    return VerticalResult(run_id, len(ck["history"]), int(ck["best_epoch"]), ck["history"], metrics, parties,
                          time.monotonic() - t0, version)


def _split_sealed(res: Mapping[str, TaskResult], lenders: Sequence[str]) -> tuple[list[Frame], list[Frame]]:
    """(frames for the arbiter, sealed frames for the platform re-tagged 2i, 2i+1 by lender index)."""
    mine: list[Frame] = []
    sealed: list[Frame] = []
    for i, n in enumerate(lenders):
        for f in parse_frames(res[n].read_payload()):
            if f.type == F_SEALED:
                if f.tag not in (0, 1):
                    raise ProtocolError(f"vertical: lender {n!r} sent an unexpected sealed frame")
                sealed.append(Frame(F_SEALED, 2 * i + f.tag, f.body))
            else:
                mine.append(f)
    return mine, sealed


def _validate(channel: PartyChannel, arb: _Arbiter, task: TaskFn, lenders: Sequence[str], platform: str,
              epoch: int, carry_p: list[Frame], carry_l: list[Frame], *,
              final: bool) -> tuple[float, dict[str, dict[str, float]]]:
    """Validation loss summed over every lender's validation rows (or, ``final``: each lender's
    metrics of the best model, from the masked joint scores)."""
    if final:
        ev = channel.run(platform, task(EVAL_PLATFORM, {"epoch": epoch, "final": True}))
        ufr = {f.tag: f for f in parse_frames(ev.read_payload()) if f.type == F_SEALED}
        res = channel.run_all({
            n: task(EVAL_LENDER, {"epoch": epoch, "final": True}, frames_bytes([ufr[i]] if i in ufr else []))
            for i, n in enumerate(lenders)
        })
        reveal = {}
        for n in lenders:
            fr = _one(parse_frames(res[n].read_payload()), F_CKKS)
            if fr is not None:
                reveal[n] = task(REVEAL, {}, frames_bytes([f64_frame(0, arb.slots(fr))]))
        return 0.0, {n: dict(r.params.get("metrics", {})) for n, r in channel.run_all(reveal).items()}
    res = channel.run_all({
        n: task(EVAL_LENDER, {"epoch": epoch, "final": False}, frames_bytes(carry_l)) for n in lenders
    })
    mine, sealed = _split_sealed(res, lenders)
    ev = channel.run(platform, task(EVAL_PLATFORM, {"epoch": epoch, "final": False},
                                    frames_bytes([*carry_p, *sealed])))
    loss = float(arb.slot_sums(mine, 1)[0]) + float(arb.slot_sums(parse_frames(ev.read_payload()), 1)[0])
    return loss, {}


TaskFn = Callable[..., Task]


def _save_ckpt(path: Path, ck: Mapping[str, Any], cfg: VerticalConfig, lenders: Sequence[str], platform: str,
               psi_runs: Mapping[str, str], version: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**ck, "config": cfg.__dict__, "lenders": list(lenders), "platform": platform,
           "psi_runs": dict(psi_runs), "version": version}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _abort(channel: PartyChannel, parties: Sequence[str], run_id: str) -> None:
    for n in parties:
        try:
            channel.run(n, Task(ABORT, {}, run_id=run_id, timeout_s=10.0))
        except FedcreditError:
            pass
