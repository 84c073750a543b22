"""Proto <-> domain conversion for the ``Scoring`` RPC (both roles use it: the coordinator serves it,
the requester's party node calls it)."""

from __future__ import annotations

from collections.abc import Iterator

from fedcredit.v1 import scoring_pb2

from fedcore.errors import ProtocolError
from fedcore.protocol.scoring.messages import JointRequest, JointResponse

REPLY_CHUNK = 1 << 20


def request_from_proto(msg: scoring_pb2.JointScoreRequest) -> JointRequest:
    return JointRequest(
        model_id=msg.model_id,
        model_version=msg.model_version,
        queries=tuple(msg.queries),
        pseudonyms=bytes(msg.pseudonyms),
        fingerprint=msg.context_fingerprint,
        public_context=bytes(msg.public_context) or None,
        allow_partial=msg.allow_partial,
        timeout_s=msg.timeout_s or 30.0,
        tree_input=bytes(msg.tree_input) or None,
        group=msg.group,
    )


def request_to_proto(req: JointRequest) -> scoring_pb2.JointScoreRequest:
    return scoring_pb2.JointScoreRequest(
        model_id=req.model_id,
        model_version=req.model_version,
        queries=list(req.queries),
        pseudonyms=req.pseudonyms,
        context_fingerprint=req.fingerprint,
        public_context=req.public_context or b"",
        allow_partial=req.allow_partial,
        timeout_s=req.timeout_s,
        tree_input=req.tree_input or b"",
        group=req.group,
    )


def response_chunks(resp: JointResponse, chunk: int = REPLY_CHUNK) -> Iterator[scoring_pb2.JointScoreChunk]:
    header = scoring_pb2.JointScoreHeader(
        request_id=resp.request_id,
        n=resp.n,
        queries=list(resp.queries),
        contributors=resp.contributors,
        missing=list(resp.missing),
        has_ciphertext=resp.ciphertext is not None,
    )
    yield scoring_pb2.JointScoreChunk(header=header)
    data = resp.ciphertext or b""
    for i in range(0, len(data), chunk):
        yield scoring_pb2.JointScoreChunk(data=data[i : i + chunk])


def response_from_chunks(chunks: Iterator[scoring_pb2.JointScoreChunk]) -> JointResponse:
    first = next(chunks, None)
    if first is None or first.WhichOneof("part") != "header":
        raise ProtocolError("scoring reply did not start with a header")
    h = first.header
    data = b"".join(bytes(c.data) for c in chunks)
    return JointResponse(
        h.request_id, h.n, tuple(h.queries), data if h.has_ciphertext else None, h.contributors, tuple(h.missing)
    )
