"""Federated binning, WOE and IV: every party's features against the lenders' labels.

Parties: lenders ``L_1 < ... < L_k`` (sorted by name), each holding 0/1 labels and the lenders' shared
feature schema for its rows; the platform ``P``, holding its features for each lender's PSI-aligned
rows (same row order); the coordinator ``C``, a non-colluding helper. Each party makes a fresh X25519
key per run and announces it signed with its TLS key (:mod:`fedcore.protocol.sealing`); a peer checks
the announcement against the federation CA before sealing to it. "Sealed" means HPKE to the named
party with the run id bound in; seeds go through ``seal_to_peers`` (signed by the sender). Masks are
ChaCha20 streams in Z_2^64.

Lender features (counts pooled with masks)::

    C -> all    binning.setup          run parameters -> envelope key, row counts, feature names/kinds
    C -> L_i    binning.keys           envelope keys -> its quantile sketches / level counts sealed to L_1;
                                       a pairwise seed sealed to each later lender
    C -> L_1    binning.cuts           sealed sketches -> fine binnings + a common seed, sealed to each L_j
    C -> L_i    binning.lender_counts  sealed cuts, sealed pairwise seeds -> its per-bin (events,
                                       non-events) + pairwise zero-sum masks + its common-seed mask
    C -> L_i    binning.lender_iv      the sum of the masked vectors -> (lenders remove the common masks:
                                       pooled counts; optimal binning) IV per lender feature

Platform features (dealer-assisted product, Du and Atallah): with ``X_i`` the platform's one-hot bin
matrix of lender i's rows (every platform feature, ``n_i x B``) and ``y_i`` the labels, the pooled
per-bin events are ``sum_i X_i^T y_i``. C deals ``Ra_i`` (``n_i x B``), ``ra_i`` (from a seed sent to
P) and ``Rb_i`` (from a seed sent to L_i) with ``rb_i = Ra_i^T Rb_i - ra_i``::

    C -> P      binning.platform_bins  -> P fine-bins its features (merging bins until each holds
                                       ``min_rows`` rows of every lender) -> number of bins per feature
    C -> P      binning.platform_mask  seeds of Ra_i -> X_i + Ra_i, sealed to L_i
    C -> L_i    binning.label_share    seed of Rb_i, rb_i, sealed X_i + Ra_i -> sealed to P:
                                       y_i + Rb_i and rb_i - (X_i + Ra_i)^T Rb_i + pairwise zero-sum mask
    C -> P      binning.platform_iv    the sealed shares -> P adds X_i^T (y_i + Rb_i) + ra_i of every
                                       lender: pooled events per bin; optimal binning; IV per feature

The result is an IV table: IV per feature per party (lenders' shared features under ``"lenders"``).
The bins, cut points, counts and WOE of a feature stay with its owner (``party.detail(run_id)``).

**What each side learns** (semi-honest parties; C does not collude with a party):

- *Coordinator*: party names, row counts per lender, feature names and kinds, the number of bins of each
  platform feature, the IV table (IV of the fine and the optimal bins, and their bin counts); sealed
  envelopes' sizes; the lenders' masked count vectors and their sum (each masked by the lenders' common
  seed, which C never holds). It deals ``Ra, ra, Rb, rb`` but sees ``X + Ra`` and ``y + Rb`` only
  sealed. No label, count, cut point or per-row bin.
- *Each lender*: its own data; the other lenders' quantile sketches (``L_1`` only: approximate
  distributions of their shared features, no labels) and level counts; the pooled per-bin counts of
  the lenders' shared features (all lenders together); ``X + Ra`` (uniform: nothing of the platform's
  bins); the IV table.
- *Platform*: its own data; ``y + Rb`` (uniform) and masked shares (uniform, as the pairwise masks
  hide each lender's); the per-bin event counts of its features POOLED over all lenders, never one
  lender's: every bin holds at least ``min_rows`` rows of every lender (a missing bin that cannot is
  left out, WOE 0), and the run refuses platform features with fewer than ``min_lenders`` (2) lenders.
  The pooled counts of many overlapping bins are what the platform needs for WOE; they are sums over at
  least ``min_rows`` rows of every lender.

Cost: ``n_i * B * 8`` bytes from P to L_i (the masked one-hot), ``n_i * 8`` back; the coordinator
generates ``Ra_i`` once to compute ``rb_i``. Not covered: a coordinator colluding with a party (it
deals ``Ra, Rb``, so with the recipient's key it could unmask); whoever holds the CA key can substitute
run keys (docs/threat_model.md).
"""
