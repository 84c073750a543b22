"""Entity alignment by ECDH private set intersection, written once against :class:`PartyChannel`.

One party is the **leader** L (the one whose blinded set is re-blinded by the others, usually a
lender); every other participant is a **follower** F (the platform, for a lender-platform run). A
pairwise run has one follower; a multi-party run intersects all participants' sets. Each party uses a
fresh secret scalar per run and per peer (:class:`~fedcore.crypto.psi.PsiSecret`); ids are the
normalized subject ids of the subjects that consented to the run's purpose.

Messages, per follower F (every arrow is relayed by the coordinator)::

    L -> F   psi.blind     a*H(x) for x in X, in L's random order                 (32 B per id)
    F -> L   psi.reblind   b*(a*H(x)), same order (shuffled in cardinality mode)  (32 B per id)
    F -> L   psi.blind     b*H(y) for y in Y, in F's random order                 (32 B per id)
    L        psi.match     a*(b*H(y)) compared with b*(a*H(x)): L finds X ∩ Y
    L -> F   psi.positions F's positions of the final intersection, in the alignment order (4 B each),
                           with their count and digest (SHA-256 over run id + positions)
    F        psi.stage     checks count and digest of what it received, stages, returns both
    C -> L   psi.verify    F's count and digest; L checks them against what it sent
    all      psi.commit    only after both checks: the staged tables become visible
                           (or psi.abort drops them)

**What each side learns** (semi-honest parties; DDH on Curve25519, SHA-256 as a random oracle):

- *Leader L*: the intersection (as its own subjects) with every follower, and |Y| of each follower.
  In cardinality-only mode F shuffles its re-blinded values, so L learns only |X ∩ Y|.
- *Follower F*: |X| and the final intersection as its own subjects (the positions L sends); nothing in
  cardinality-only mode except |X|. In a multi-party run F learns only the intersection of all sets,
  not its pairwise intersection with L.
- *Coordinator*: set sizes, the intersection size (the count of positions relayed), the positions'
  digest (a hash of values it relays anyway), timing and who takes part. Everything it relays is a
  blinded point under a scalar it does not know, or a position in a freshly shuffled list; no relayed
  value equals an id or a hash of an id, and because scalars and shuffles are fresh per run, no relayed
  value links to another run.
- *An observer of the links*: sizes and timing only (mutual TLS).

Not covered: a malicious party can put ids it does not hold into its set (inherent to PSI) or lie about
matches. The alignment tables are staged at every party and committed only when every party has
staged and both sides verified the positions (a truncated or altered list fails the run), so a failed run
leaves no table anywhere. A result a party refuses as corrupt is a ``CorruptResult`` naming the party it
came from.

Layout: ``messages`` (task kinds, constants), ``party`` (the handlers a party runs), ``coordinator`` (the
driver).
"""
