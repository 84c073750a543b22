"""Pre-approval initiated by the platform: a viewer taps "apply now" in a live stream and the lenders
taking part answer with offers (amount and rate) or nothing, within a time budget.

Roles: the **platform** P (its node, asked by its own application), the **coordinator** C, and each
**lender** L named in the request. Every arrow goes through C (P <-> C is the ``Preapproval/Request``
RPC, C <-> L the party link).

Flow of one request::

    app -> P   viewer id, product (kind, amount, term), lenders of this stream, budget (local API)
    P          checks the viewer's consent for purpose ``preapproval`` (refused without: nothing leaves);
               pseudonymizes the id with the federation key; audits the request
    P -> C     pseudonym (16 B), product, lender names, budget
    C -> L     task ``preapproval.offer`` to each named lender separately: a fresh request id, the
               pseudonym, the product. L is NOT told which other lenders were asked.
    L          scores the pseudonym jointly with the existing joint scoring (protocol
               :mod:`fedcore.protocol.scoring`; a viewer unknown to L scores on the others' data), applies
               its own pricing policy (PD bands -> amount and rate) and audits its decision
    L -> C     ``{"decision": "offer", amount, rate, term_months, valid_s}`` or ``{"decision": "decline"}``
    C -> P     the offers only. Declines, lenders that did not answer within the budget and lenders
               offline are all simply absent (C does not wait past the budget).

**What each side learns**

- *Platform P*: which lenders made an offer and its terms. Never a score, PD, points, reason, a
  decline reason, nor whether a missing lender declined, timed out or was offline.
- *Lender L*: that the platform asks for a pre-approval of this pseudonym for this product (it can tell
  whether it knows the pseudonym), plus everything joint scoring tells a requester (the others' summed
  partial logit, fraud-list and active-loan counts). Not the raw id, not the other lenders asked, not
  their offers.
- *Coordinator C*: who asked, the pseudonym (linkable across requests, not to an id), the product, the
  lenders asked, each lender's answer (offer terms or decline) and timing; plus what it learns from
  the joint scoring requests the lenders make. It holds no key and sees no score.
- *Other members*: the joint scoring request of each lender looks like any other scoring request.

Not covered: a lender can price on anything it likes (its policy is its own); C could drop or delay an
offer (it is trusted for availability, as for every protocol).

Layout: ``messages`` (kinds, product, offers, payloads), ``party`` (the lender's handler),
``coordinator`` (the fan-out with a budget).
"""
