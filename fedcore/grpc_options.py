"""gRPC channel and server options shared by both roles (message sizes, keepalive)."""

from __future__ import annotations

MAX_MESSAGE_BYTES = 16 << 20

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Parties ping every few seconds to notice a dead coordinator; allow it.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
]

CLIENT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after a coordinator restart; the link client adds its own back-off.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.min_reconnect_backoff_ms", 200),
]


def secure_target_options(server_name: str) -> list[tuple[str, int | str]]:
    """Client options for dialing a server whose certificate names ``server_name``."""
    return [*CLIENT_OPTIONS, ("grpc.ssl_target_name_override", server_name)]
