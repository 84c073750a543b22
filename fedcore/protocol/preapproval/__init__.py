"""Pre-approval initiated by the platform: a viewer taps "apply now" in a live stream and the lenders
taking part answer with offers (amount and rate) or nothing, within a time budget.

Roles: the **platform** P (its node, asked by its own application), the **coordinator** C, and each
**lender** L named in the request. Every arrow goes through C (P <-> C is the ``Preapproval/Request``
RPC, C <-> L the party link).

Flow of one request::

    app -> P   viewer id, product (kind, amount, term), lenders of this stream, budget (local API)
    P          checks the viewer's consent for purpose ``preapproval`` (refused without: nothing leaves);
               pseudonymizes the id with the federation key; audits the request
    P -> C     pseudonym (16 B), product, lender names, budget, and P's envelope key announcement (an
               X25519 public key signed with P's TLS key, :mod:`fedcore.protocol.sealing`)
    C -> L     task ``preapproval.offer`` to each named lender separately: a fresh request id, the
               pseudonym, the product, P's name and announcement. L is NOT told which other lenders
               were asked.
    L          scores the pseudonym jointly with the existing joint scoring (protocol
               :mod:`fedcore.protocol.scoring`; a viewer unknown to L scores on the others' data), applies
               its own pricing policy (PD bands -> amount and rate) and audits its decision. From L's
               second request for a product kind, C has already made L's joint request (L's *standing
               request*, :mod:`fedcore.protocol.scoring.groups`) and the task carries the sum under L's
               key; L uses it if it is for its current key and model, else calls as before
    L          checks the announcement against the federation CA for P's name and seals its terms to it
               (HPKE, purpose ``preapproval-offer/<request id>``, signed with L's TLS key)
    L -> C     ``{"decision": "offer", "sealed": {...}}`` or ``{"decision": "decline"}``, and for C only
               the standing request for the next viewer of this kind (model, version, key fingerprint)
    C -> P     the sealed offers only. Declines, lenders that did not answer within the budget and
               lenders offline are all simply absent (C does not wait past the budget).
    P          opens each sealed offer (checks L's signature and certificate; an offer sealed for
               another request or re-attributed to another lender does not open and is dropped)

A new platform snapshot (``AnnounceSnapshot``): P -> C the snapshot's date (``YYYY-MM-DD``), platform
role only; C -> every online lender task ``monitoring.snapshot`` ``{"as_of": date}``; a lender that
monitors a book runs a pass (its alerts stay with it) and acknowledges with ``{"ack": true}`` whether
it monitors or not.

**What each side learns**

- *Platform P*: which lenders made an offer and its terms. Never a score, PD, points, reason, a
  decline reason, nor whether a missing lender declined, timed out or was offline.
- *Lender L*: that the platform asks for a pre-approval of this pseudonym for this product (it can tell
  whether it knows the pseudonym), plus everything joint scoring tells a requester (the others' summed
  partial logit, fraud-list and active-loan counts). Not the raw id, not the other lenders asked, not
  their offers.
- *Coordinator C*: who asked, the pseudonym (linkable across requests, not to an id), the product, the
  lenders asked (it sends each its task, and can tie each one's joint scoring request to this
  pre-approval: the same pseudonym at the same moment), whether each lender offered or declined (not
  the terms: they are sealed to P, padded to :data:`~.messages.SEALED_TERMS_BYTES` so that every
  sealed offer has one size) and timing; plus what it learns from the joint scoring requests the
  lenders make (and, from their replies, each lender's standing request: the model, version and key
  fingerprint its scoring call shows anyway). It holds no key and sees no score. From a snapshot
  announcement: that P loaded a snapshot of that date.
- *Other members*: the asked lenders' joint scoring requests for this viewer, grouped into one task per
  member (:mod:`fedcore.protocol.scoring.groups`): that these requests belong together (the same
  pseudonym at the same moment showed it before) and how many lenders scored; no lender's name.
- *Every lender* (asked or not) from a snapshot announcement: that P loaded a behaviour snapshot of
  that date; nothing about its content or subjects.

Not covered: a lender can price on anything it likes (its policy is its own); C could drop or delay an
offer (it is trusted for availability, as for every protocol). C names P to the lenders: a C that
named another certified party as the platform and relayed that party's announcement would have the
terms sealed to that party (C itself cannot open them; C is trusted for routing, as everywhere).

Layout: ``messages`` (kinds, product, offers, payloads), ``party`` (the lender's handler),
``coordinator`` (the fan-out with a budget).
"""
