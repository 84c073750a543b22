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
``d = s(c + u) - y ~ beta + alpha * u + gamma * u^2`` with ``alpha = s(c)(1 - s(c))``, ``beta = s(c) - y``,
``gamma = alpha (1 - 2 s(c)) / 2`` (P encrypts ``[[u^2]]`` itself: it knows ``u``). At ``w = 0`` the first
two terms are FATE's Taylor expansion (``0.5 + 0.25 z - y``); later it is exact in ``c`` and second order
in ``u`` (the first-order residual lost 0.005 AUC on the synthetic federation, see docs/vertical.md).
P sends ``min(u^2, CURVATURE_CAP^2)`` for ``u^2`` (uncapped, ``gamma u^2`` ran margins away at large
learning rates). The intercept starts at the log-odds of the pooled training bad rate (in the lenders'
masked moments). Mini-batches, Adam at every party on its own slice (per coordinate, so equal to
centralized Adam on this gradient), early stopping on the **exact** validation log-loss
``l(c + u) = sum_k a_k(c, y) T_k(u / 16)`` (a Chebyshev series, 1e-6 per row: the lender computes the
``a_k``, the platform the ``T_k``; :func:`~fedcore.protocol.vertical.numerics.loss_coefficients`).
Packing: one slot per subject, vectors padded to whole ciphertexts; after the per-column plaintext
products a column's ciphertexts are added slot-wise ("folded"), masked per slot and decrypted
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
    P -> C    [[u_i]], [[u_i^2]] for lender i's batch, sealed to L_i (C holds the CKKS key but cannot open it)
    C -> L_i  vertical.residual  the sealed [[u_i]], [[u_i^2]], the masked lender aggregate of step t-1
    L_i -> C  [[alpha]], [[gamma]], [[beta]] sealed to P; per column j of (1, x_L):
              fold([[u]] * (x_j alpha) + [[u^2]] * (x_j gamma)) + fold(x_j beta) + r_j (lenders' common seed)
    C -> P    vertical.backward  the sealed [[alpha]], [[gamma]], [[beta]] of every lender
    P -> C    per lender, column j of x_P: fold([[alpha]] * (x_j u) + [[beta]] * x_j + [[gamma]] * (x_j u^2)) + s_j
    C         decrypts, sums slots (and lenders): P's masked sum S_P + sum(s), lenders' S_L + sum(r)

Epoch end: ``vertical.eval_lender`` (L_i seals ``[[a_k]]`` of its validation rows to P, nothing for C),
``vertical.eval_platform`` (P returns ``fold([[a_k]] * T_k(u / 16)) + r``, zero-sum masks): C decrypts
the slot sums = each lender's exact validation loss;
``vertical.checkpoint``. At the end the parties use the best epoch: P seals ``[[u]]`` of lender i's
validation rows to L_i, L_i returns ``[[z + m]]`` masked per slot, C decrypts and returns the masked
values (``vertical.reveal``), L_i removes ``m`` and reports AUC / KS / bad rate on its own validation
rows; ``vertical.finish`` writes the slices.

**What each side learns** (semi-honest parties; coordinator not colluding with a party):

- *Coordinator (arbiter)*: row counts per lender (train / validation), feature counts and names, data
  hashes; per-slot values ``v + mask`` with masks uniform in ``[-2^30, 2^30]`` (statistical distance
  about ``|v| / 2^30`` per value); per step the *masked* gradient sums; per epoch each lender's exact
  validation log-loss (a sum over its validation rows); at the end each lender's validation AUC, KS
  and bad rate (reported in the job result). It relays ``[[u]]``, ``[[u^2]]``, ``[[alpha]]``, ``[[gamma]]``,
  ``[[beta]]``, ``[[a_k]]`` only in
  envelopes it cannot open, and never sees a weight, a scaler, a label or a feature value.
- *Lender L_i*: its own data; ``[[u]]``, ``[[u^2]]`` ciphertexts it cannot decrypt; per step the aggregate lender
  gradient ``sum_i X_L,i^T d_i`` over all lenders' batches (with one lender, FATE's guest gradient),
  which mixes in the aggregate ``X_L^T (alpha u + gamma u^2)`` of the batch; the pooled lender scaler (pooled mean and
  std of the lender features), the pooled training bad rate and all lenders' training row counts; at
  the end the joint score ``z`` of its own validation subjects, hence ``u_P`` of those subjects
  (exactly what joint scoring reveals).
- *Platform P*: its own data; ``[[alpha]]``, ``[[gamma]]``, ``[[beta]]``, ``[[a_k]]`` ciphertexts it cannot
  decrypt; per step its own gradient ``sum_i X_P,i^T d_i`` (FATE's host gradient); row counts per
  lender. Never labels, residuals,
  per-subject gradients or lender weights.
- *The final model*: each slice is kept by its party (``HOME/models/<run_id>/slice.json``); w_P is
  known to the platform only, w_L and b to the lenders only. Scoring with it (protocol 4) reveals to the
  requesting lender the platform's partial logit of the scored subject.

Encoding (``vertical.setup``'s ``encoding``): ``onehot`` (default) gives each party's categorical
columns indicators of their levels; ``woe`` replaces every feature by the WOE of its bin in the named
federated binning run (:mod:`fedcore.protocol.binning`), each party with its own features' bins and
WOE only, as that run left them at the party (a lender: the pooled WOE of the shared features; the
platform: the WOE of its own bins from counts pooled over all lenders, never one lender's). The
encoding adds nothing to what any side learns above: no bin, WOE or count leaves a party, and the
coordinator learns only the encoding's name and the binning run's id.

Not covered: a coordinator colluding with a party (the arbiter's key decrypts every relayed
ciphertext if the envelope key leaks); an actively malicious coordinator that holds the CA key. Session
keys are announced signed by each party's TLS key and checked against the CA
(:mod:`fedcore.protocol.sealing`), so a key the coordinator substitutes is refused.

Layout: ``messages`` (task kinds, payload frames), ``party`` (the handlers a lender or the platform runs),
``coordinator`` (the arbiter's driver), ``numerics`` (masks, fixed point, batch plan, CKKS helpers),
``session`` (a party's table and per-run state).
"""
