"""Pseudonym key distribution's task kinds and the purpose its sealed envelopes are bound to."""

ANNOUNCE, SEAL, INSTALL = "keys.announce", "pseudonym.seal", "pseudonym.install"
PURPOSE = "pseudonym-key"


def purpose(run_id: str) -> str:
    """What an envelope of this protocol is bound to: the protocol and the run."""
    return f"{PURPOSE}/{run_id}"
