"""Distributing the federation's pseudonym key party to party, through the coordinator, which never
holds it.

Every party has a long-lived X25519 envelope key (``HOME/keys/envelope.key``) and announces its public
half signed with its TLS key, with its certificate attached; peers check the certificate against the
federation CA and the name, so a relaying coordinator cannot substitute a key without the CA's key
(see docs/threat_model.md for the admin-holds-the-CA caveat and the fingerprint check).

Messages::

    coordinator -> each party   keys.announce       party -> {envelope public key, signature, certificate,
                                                             fingerprint of its pseudonym key if it has one}
    coordinator -> creator      pseudonym.seal      the others' announcements -> one sealed envelope each
    coordinator -> each other   pseudonym.install   the creator's announcement + its envelope

The creator is a party that already holds the key (so pseudonyms stay stable when a party joins), or
the first party. Envelopes are made by :func:`fedcore.protocol.sealing.seal_to_peers` (HPKE to each
recipient's certificate-bound key, signed by the creator's TLS key) and bound to (sender, recipient,
"pseudonym-key/<run>"); a substituted key or envelope is refused with PermissionDenied.

**What each side learns**: parties learn the key (that is the point) and each other's public keys;
the coordinator learns public keys, certificates, envelope sizes and the key's fingerprint (a SHA-256
of the key, which does not help compute pseudonyms); an observer learns sizes.

Layout: ``messages`` (task kinds), ``party`` (the handlers a party runs), ``coordinator`` (the driver).
"""
