"""Joint scoring, the consortium blacklist check and the multi-lending count, written against
:class:`~fedcore.protocol.channel.PartyChannel` (protocols 4 and 5 of the design).

Roles: the **requester** R (a lender's node, asked by its own loan system), the **coordinator** C, and
every other admitted party P (the contributors). The federation pseudonym key is held by every party and
never by C, so ``pseudonym = HMAC(key, kind || id)[:16]`` is the same person everywhere.

Flow of one request (every arrow through C; R <-> C is the ``Scoring/Score`` RPC, C <-> P the party link)::

    R -> C   model id + version, queries, pseudonyms (16 B each), CKKS public context fingerprint
             (+ the public context itself the first time C sees that fingerprint; C caches it)
    C -> P   task ``scoring.contribute``: a fresh request id, the same fields, the public context only
             if P has not had that fingerprint yet. P is NOT told who asked.
    P -> C   one EncryptedVector (CKKS, :data:`SCORING_CKKS`) of length n * len(queries): per query, per pseudonym,
             ``score``: P's partial logit ``w_P . (x_P - mean_P) / std_P``;
             ``blacklist``: 1.0 if the subject is on P's fraud list (and consented to ``blacklist``);
             ``loans``: 1.0 if P has an active loan with the subject.
             CKKS parameters: :data:`SCORING_CKKS` (N=4096, one data prime, no Galois keys) by default.
             A subject P does not know, or without consent, gets 0.0 (the neutral value: a standardized
             feature at its mean contributes 0); it is encrypted like any other value.
    C        sums the ciphertexts of all contributors (``fedcore.crypto.he.add``)
    C -> R   the summed EncryptedVector, the number of contributors, the names of missing parties
    R        decrypts; joint logit = intercept + own part + external sum; blacklist/loans as counts.

**What each side learns** (semi-honest; CKKS IND-CPA under RLWE at N=4096 with 109 modulus bits, the
128-bit bound; N=8192 when the requester uses ``SUMS``):

- *Coordinator*: who asked (it authenticates R), n, the queries, the model id, timing and the
  pseudonyms. Pseudonyms are keyed hashes: without the federation key C cannot link them to an id or
  test a guess, but the same person asked twice gives the same pseudonym (C can link repeated
  requests for one subject). C never sees a plaintext value and holds no secret key: it cannot decrypt a
  party's response nor the sum. Neutral values are encrypted zeros, indistinguishable from real ones.
- *Contributor P*: that *someone* asked about these pseudonyms (it can tell which of them it knows), the
  model id and the queries; not who asked, not the result. P sees no other party's contribution.
  **Linkable:** every task carries the requester's key fingerprint, stable for the requester's key
  lifetime (``key_rotate_s``, 1 h by default), so P can group the requests made under one key (one
  requester in that period) with their sizes and timing; it is not told which lender that is.
- *Requester R*: per applicant, the sum of the other parties' partial logits (so with exactly one other
  contributor, that party's partial logit: inherent in a joint linear score), the number of members that
  list the applicant as fraud and the number that hold an active loan with it, never which ones.
- *An observer of the links*: sizes and timing (mutual TLS).

Not covered: a malicious contributor can send wrong values (it could also lie about its data); R could
ask about arbitrary pseudonyms it computed from guessed ids (the controls: C's per-requester rate limit,
:data:`~fedcore.protocol.scoring.messages.DEFAULT_RATE_PER_MINUTE` applicants a minute, refused as
:class:`~fedcore.errors.RateLimited`; the audit log at every party; the lender role check at C).

Key handling: R makes a fresh CKKS key pair (:class:`KeyRing`) and rotates it on a schedule; contexts
are cached by fingerprint at C and at each P (bounded LRU), so a steady stream of requests sends only
the fingerprint.

Small requests (at most :data:`~fedcore.protocol.scoring.masked.MASKED_MAX_VALUES` values by default) are
summed with masks instead of CKKS: P answers its values plus a mask from a fresh seed sealed to R's X25519
key, C adds, R opens the seeds and removes the masks. Same flow, same fields, and the same statement
of what each side learns (a masked value is uniform to C; R sees one sealed seed per contributor);
:mod:`fedcore.protocol.scoring.masked`.

Several lenders asking about one viewer for one pre-approval: the coordinator groups their requests and
sends each member one ``scoring.contribute_group`` task (:mod:`fedcore.protocol.scoring.groups`, what it
changes for whom stated there). Small answers are encrypted from pooled encryptions of zero
(:mod:`fedcore.crypto.zero_pool`): same ciphertexts, less work on the request path.

Tree models (query ``tree``, alone in a request, no CKKS): the coordinator asks the platform only; the
requester sends rotated, masked tables of its leaf values and a seed sealed to the platform, the platform
its rotated picks and a sealed mask sum, the coordinator adds; flow and what each side learns in
:mod:`fedcore.protocol.scoring.trees`.

Layout: ``messages`` (kinds, payloads, model slices), ``party`` (the contributor's handler), ``coordinator``
(the driver), ``requester`` (the requesting lender's side), ``masked`` (masked sums of small requests),
``trees`` (tree scores).
"""
