"""Horizontal (same-schema) federated training: what the coordinator and the parties share.

Training jobs are Flower apps (Message API). Every Flower ``Message`` between the coordinator's
``ServerApp`` and a party's ``ClientApp`` rides the party link as one task of kind
:data:`FLOWER_TASK` whose payload is the message serialized with Flower's own protobuf serde
(:func:`encode_message` / :func:`decode_message`; never pickle). This module holds what both sides must
agree on: message types, node ids, the hyper-parameter record, the CKKS encoding of updates and
aggregates, federated-standardisation statistics, and the differential-privacy accounting.

Messages and what each side learns (``secure="he"``)
----------------------------------------------------
Each item: message type -- content -- what the coordinator learns.

- ``query.fc_envkey`` -- reply: the party's per-run X25519 envelope public key -- public keys only.
- ``query.fc_keygen`` -- to the creator: the recipients' public keys; reply: one sealed envelope per
  recipient and the CKKS *public* context -- envelope sizes; a public context (encrypts, cannot decrypt).
- ``query.fc_keyinstall`` -- to each other party: its envelope -- nothing (relays opaque bytes).
- ``query.fc_stats`` -- reply: row count, feature-schema hash, per-feature ``ceil(log2 max|x|)`` (the
  public scaling exponent for the moments) -- row counts (already in the registry), feature magnitudes.
- ``query.fc_moments`` -- reply: CKKS(row-weighted first and second feature moments) -- nothing.
- ``query.fc_scaler`` -- to parties: CKKS(sum of moments); reply: a hash of the scaler built from it --
  that all parties built the same scaler.
- ``train`` -- to parties: CKKS(global aggregate) (round 1: the public random initial model); reply:
  ``CKKS([w*n/u, n/u])`` plus ``num-examples`` and ``train-loss`` -- each party's row count and
  last-epoch loss; never a weight.
- ``evaluate`` -- to parties: CKKS(global aggregate); reply: AUC, KS, log loss and row count on the
  party's validation split -- those metrics.
- ``query.fc_calib`` (``calibrate``, the default; :mod:`~fedcore.protocol.horizontal.calibration`) -- to
  parties: CKKS(final aggregate), the current Platt ``(a, b)`` and CKKS(last summed statistics); reply:
  the next ``(a, b)`` and CKKS(five means of the calibration likelihood's gradient and Hessian on the
  party's training rows) -- ``(a, b)`` per iteration (recorded in the model record).
- ``query.fc_save`` -- to parties: CKKS(final aggregate), the model version and ``(a, b)`` (folded into
  the last layer); reply: SHA-256 of the decrypted model and of the data used -- the hashes.

The coordinator only ever adds ciphertexts (:func:`sum_encrypted`); the global model is decrypted
only by the parties (``[sum w_i n_i/u] / [sum n_i/u]``: the weighted average, with the row counts
inside the ciphertext). What a *party* learns: the aggregate of every round, hence with exactly two
parties the other party's update (aggregate minus its own); run with ``min_parties >= 3`` to avoid it,
and add DP (:func:`clip_and_noise`) to bound what the aggregate reveals about any one party.

With ``secure="none"`` the same messages carry plain float32 arrays and moments, and Flower's
strategies average them at the coordinator, which then sees every update in clear.

Layout: ``messages`` (kinds, TrainParams, codec), ``aggregation`` (encrypted sums, DP), ``party`` (the Flower
ClientApp handlers a party runs), ``env`` (the party's per-run training state and data), ``coordinator`` (the
driver: key set-up, scaler, rounds, HorizontalJob), ``server`` (the SecureAggregation strategy and the
ServerApp), ``checkpoints``, ``flower`` (the one adapter touching Flower's private internals).
"""

from __future__ import annotations

from fedcore.npy_header import install as _npy_header_thread_safe
from fedcore.protocol.horizontal.aggregation import (  # the protocol's vocabulary, as ``hz.<name>``
    DpReport,
    as_config_record,
    clip_and_noise,
    decrypt_average,
    dp_epsilon,
    encrypt_weighted,
    is_encrypted,
    pack_encrypted,
    sum_encrypted,
    unpack_encrypted,
    weights_sha256,
)
from fedcore.protocol.horizontal.messages import (  # the protocol's vocabulary, as ``hz.<name>``
    CIPHER_KEY,
    CIPHER_STYPE,
    FLOWER_TASK,
    MAX_WIRE_MESSAGE,
    MSG_ENVKEY,
    MSG_KEYGEN,
    MSG_KEYINSTALL,
    MSG_MOMENTS,
    MSG_SAVE,
    MSG_SCALER,
    MSG_STATS,
    TrainParams,
    decode_message,
    encode_message,
    flower_run_id,
    node_id_for,
)

_npy_header_thread_safe()  # Flower arrays are decoded by concurrent tasks (see fedcore.npy_header)

__all__ = [
    "CIPHER_KEY",
    "CIPHER_STYPE",
    "FLOWER_TASK",
    "MAX_WIRE_MESSAGE",
    "MSG_ENVKEY",
    "MSG_KEYGEN",
    "MSG_KEYINSTALL",
    "MSG_MOMENTS",
    "MSG_SAVE",
    "MSG_SCALER",
    "MSG_STATS",
    "DpReport",
    "TrainParams",
    "as_config_record",
    "clip_and_noise",
    "decode_message",
    "decrypt_average",
    "dp_epsilon",
    "encode_message",
    "encrypt_weighted",
    "flower_run_id",
    "is_encrypted",
    "node_id_for",
    "pack_encrypted",
    "sum_encrypted",
    "unpack_encrypted",
    "weights_sha256",
]
