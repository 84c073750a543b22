"""Horizontal gradient-boosted trees: lenders that share a schema, each with its own labelled rows.

Roles: lenders ``L_1..L_k`` (``L_1`` the *leader*) and the coordinator ``C``. The leader makes a fresh
CKKS key pair per run (:data:`fedcore.crypto.he.SUMS`: additions only); every lender encrypts under its
public context and ``C`` adds ciphertexts, which it cannot open. The leader grows each tree with the
ordinary learner (:func:`models.gbdt.grower.grow_tree`) on the decrypted *sums*; ``C`` relays. Numbers are
quantized to ``2^-QUANT_BITS`` before encryption and the decrypted sums rounded back, so CKKS noise never
reaches a split decision (histograms equal the plain sums of the quantized values).

Messages::

    setup   C -> L_i  lenders, leader, features, parameters    L_i -> C  rows, signed per-run key,
                                                              level digests of categorical features
                                                              (leader: + CKKS public context)
    keys    C -> L_i  the key announcements                    L_i -> C  pairwise seeds and (L_1) the
                                                              group key, sealed (seal_to_peers)
    quant   C -> L_i  its sealed seeds, public context,        L_i -> C  per feature (count, count x
                      level counts                            quantiles), rows per level, rows, defaults, masked in
                                                              Z_2^128 by the group key
    edges   C -> L_i  the sum (the masks cancel)               L_i -> C  bin counts, base score
    per tree, per level (the learner's build calls):
    grow    C -> L_1  (first: tree number; then the summed histograms of the last request)
                                                     L_1 -> C  splits decided since the last request
                                                              (node, feature index, bin threshold or
                                                              bin set, default direction) and nodes to build;
                                                              at the end the tree (opaque refs, leaf values)
    hist    C -> L_i  the splits, nodes to build (first of a tree: last tree's leaf values)
                                                     L_i -> C  Enc(per node, feature, bin: sum g, sum h)
                                                              (not the leader: its own sums stay with it
                                                              and are added after decryption);
                                                              first of a tree: validation loss sum, rows
    finish  C -> L_i  last leaf values (or "stopped"), the kept trees
                                                              L_i keeps the model with the lender rules

Early stopping stops ``early_stopping_rounds`` trees after the best pooled validation loss (a last
``hist`` with nothing to build gives the last tree's loss) and keeps the best prefix. Categorical
features and row subsampling work as in :mod:`fedcore.protocol.trees` (level digests checked by ``C``;
each lender's own per-tree sample).

**What each side learns** (semi-honest; C colluding with no lender):

- *Coordinator C*: row counts per lender, feature count, bin counts; the trees (split feature index, bin
  index, default direction, leaf values) but **no threshold, edge or feature value**; per-lender quantile
  vectors masked by a key it does not hold, histograms as ciphertexts only; per tree each lender's
  validation log-loss sum.
- *Leader L_1*: the summed (over the other lenders) per-bin g and h of every built node: aggregates,
  never one other lender's when there are three or more lenders. With two, the other lender's sums are
  what the leader decrypts (as they were its total minus its own before): use three or more lenders where
  that matters. It could decrypt a single lender's ciphertext, but C never forwards one on its own when
  there are two or more others (C colluding with L_1 would break this).
- *Every lender*: the pooled bin edges (weighted means of all lenders' quantiles), pooled row and default
  counts, the trees and leaf values; a lender colluding with C unmasks the others' quantile vectors.
- Everyone: their own data and the released model.

Cost per built node: each lender but the leader sends ``2 x features x (max_bins + 1)`` CKKS slots (N=8192: 4096
slots, ~130 KB per ciphertext).
"""
