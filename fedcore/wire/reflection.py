"""gRPC server reflection (v1 and v1alpha) for every fedcredit server: the coordinator's and a party's
local scoring API, so that clients in other languages (grpcurl, Node.js, ...) can discover the services."""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(services: tuple[str, ...], server: grpc.Server) -> None:
    """Server reflection, v1 and v1alpha. grpcio-reflection ships only v1alpha; v1 is the same messages
    under a new package (same fields, same numbers), so the v1alpha servicer answers v1 clients too."""
    names = (*services, reflection.SERVICE_NAME, REFLECTION_V1)
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names)
    handler = grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    })
    server.add_generic_rpc_handlers((handler,))
