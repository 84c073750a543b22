"""Hybrid gradient-boosted trees: many lenders with labels plus the platform's features.

Layout (as in vertical logistic regression): lender ``L_i`` holds labels and the shared-schema lender
features ``x_L`` of its rows, aligned by its PSI run with the platform ``P``, which holds the platform
features ``x_P`` of the same rows (one table per lender, in that lender's row order). The coordinator
``C`` runs the ordinary learner (:mod:`models.gbdt`) on a :class:`~.coordinator.FederatedHistogramSource`
and is the non-colluding helper it already is in vertical LR.

Trees are *layered*: the first tree splits on lender features only, and below a platform split only
platform features are used (``sticky_owners``), so no party ever needs another party's split outcome to
build a histogram. A node with only lender splits above it is a *lender node* (every lender knows its
rows there); a node below a platform split is a *platform node* (its rows are known from the platform's
bins, by ``P`` and ``C``).

Messages (fixed point ``round(v * 2^32)`` in ``Z_2^64``; masks are ChaCha20 streams; ``[x]_K`` is a
secret sealed with :func:`fedcore.protocol.sealing.seal_to_peers` to ``K``'s per-run key, which ``K``
announced signed with its TLS key and certificate; the sender checks that against the federation CA and
signs the sealed payload, so ``C`` relays it but can neither open nor substitute it)::

    setup   C -> L_i   schema names,         L_i -> C  rows, signed per-run key announcement, per
                       subsample, seed                 categorical feature a digest of each (code, level)
            C -> P                           P -> C    rows per lender, feature names, bin counts, its
                                                       announcement, the bin (rank, no value) of every row
    keys    C -> L_i   announcements         L_i -> C  [pairwise seed s_ij]_Lj (j > i); L_1: [group key]_Lj
    bins    C -> L_i   its sealed seeds,     L_i -> C  per-feature (count, count x quantiles), rows per
                       level counts                    level of each categorical feature, rows, defaults,
                                                       in Z_2^128, masked by PRG(group key, L_i)
    edges   C -> L_i   the sum               L_i -> C  bin counts, base score (pooled default log-odds)
    per tree t:
    begin   C -> L_i   last tree's leaf values for L_i's rows (below)
                                             L_i -> C  [fresh tree seed t_i]_P
            C -> P     the sealed seeds
    per level, for the nodes to build (the smaller child of each split; the sibling by subtraction):
    hist    C -> L_i   lender nodes          L_i -> C  lender-feature histograms of g, h with pairwise
                                                       masks (cancel in the sum over lenders); per lender
                                                       node A: g 1[A] + PRG(t_i, A), h 1[A] + PRG(t_i, A)
                                                       for every row (uniform in Z_2^64)
            C -> P     (node, root lender node, mask recipes)
                                             P -> C    per (platform feature, bin): sum over the node's rows
                                                       (by its own splits) of -PRG(t_i, root), all lenders
            C adds its per-bin sums of the masked rows (it has the bins) and P's sums: only the per-bin
            totals over all lenders remain. Lender-feature histograms: the masked sum over lenders.
    split   C -> L_i   (node, lender feature index, bin threshold / bin set, default direction)
            C -> P     the same for platform features;  owner -> C  opaque reference of its new rule
    leaves  C -> L_i   values of leaves under lender nodes; for each platform subtree, the value each of
                       L_i's rows reaches in it (C computes it from the platform bins)
    eval    C -> L_i   the last tree's leaves    L_i -> C  validation log-loss sum and row count
            (begin's reply carries the same after each tree; early stopping keeps the best prefix)
    finish  C -> L_i   the kept trees (opaque splits, leaf values), the lenders' gain importance
                                             L_i -> C  its validation metrics (AUC, KS, ...)
            C -> P     the platform's gain importance; the kept trees' shapes (no leaf value), for
                       evaluating its own splits in joint scoring

**What each side learns** (semi-honest parties, ``C`` colluding with none):

- *Platform P*: its own data and rules (its raw thresholds never leave it); the lenders' row counts, the
  tree shapes and node ids; which of its features and bins ``C`` chose; for a lender split only that the
  node split and which child was built (the child with the smaller hessian sum); the total split gain of
  each of its features (its importance report), no leaf value. Per-tree mask seeds,
  never a masked or clear value: **no label, gradient, hessian, lender feature, lender threshold or
  lender split outcome.** It receives no payload at all.
- *Lender L_i*: its own data; the pooled lender bin edges (weighted means of every lender's quantiles)
  and pooled row and default counts; the lender rules (identical at every lender); the trees' shapes and
  leaf values; for each of its rows and each platform subtree, the leaf value the row reaches there (so the
  outcome of the platform's splits for its rows, as leaves). **No platform feature value, bin or
  threshold**, nothing of another lender's rows beyond those aggregates.
- *Coordinator C*: counts, feature names, bin counts; the platform's bin (rank within a feature, no value)
  of every aligned row *position* (positions are PSI output order, not tied to a subject for ``C``);
  per-row values masked by seeds it does not have (uniform); per node the per-(feature, bin) sums of g
  and h over all lenders' rows, hence the gains, splits and leaf values. A bin that holds a single row of
  a node reveals that position's g and h (hence its label) to ``C``, without a subject. Per tree, each
  lender's validation log-loss sum; at the end each lender's validation metrics. It sees **no
  clear per-row value, no feature value, no threshold**, and does not learn which lender node a row is in.

Beside the peers: FATE's SecureBoost (2.x) sends every host each sample's node position (the instance
space) and Paillier-encrypted g/h per row; the guest decrypts per-bin sums (shuffled candidates) and
learns every host split's partition of its samples. Here the platform gets neither positions nor
encrypted gradients; lenders learn leaf values per row (comparable to the guest's instance space) but no
bin; per-bin sums go to ``C`` instead of the label side, so a lender never sees aggregates of another
lender's gradients. SecretFlow's SGB calls itself "not provably secure" and also reveals bucket sums and
instance partitions to the label holder. Bins are not shuffled: ``C`` needs their order to scan
thresholds, and it learns no threshold values anyway; the label side, where the peers shuffle, never
sees platform histograms here.

Not covered: ``C`` colluding with ``P`` (``P``'s seeds unmask every row's g, h for ``C``, and ``P`` can tie
positions to subjects); a lender colluding with ``C`` learns other lenders' quantile vectors (group key),
not their histograms when three or more lenders take part (pairwise masks). An active coordinator
substituting a key announcement or a sealed seed is refused (``permission_denied``).

Resume (:mod:`.checkpoint`): ``C`` keeps what it learned (trees, its split orders in bin terms, gains,
losses) after each tree; a resumed run sets up again and replays the finished trees' ``begin`` and
``split`` steps (no histogram), which show each party nothing it had not seen in the first attempt.

Categorical lender features: the lenders' level lists must agree (each a prefix of the longest; ``C``
checks the digests and sends the level count), ``C`` learns which lender features are categorical and the
digests (schema metadata), lenders the pooled rows per level. Row subsampling: each lender gives the rows
outside its own per-tree sample zero g and h (nobody else learns the sample). Early stopping: above.

Cost per tree: each lender sends, per built lender node, 16 bytes per row plus 16 bytes per lender
(feature, bin); ``P`` sends 16 bytes per (platform feature, bin) per built node; ``C`` adds 64-bit sums
over its rows per built node and platform feature.
"""
