"""Client channels to sgxemu services: Unix sockets and TLS (optionally mTLS).

Invariant: a long-lived client (one component calling another for as long as it runs) passes
:data:`QUICK_RECONNECT`, so that after the service it calls restarts its calls succeed again
within about a second instead of failing for gRPC's default backoff (a second, growing to two
minutes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

#: One channel option: a gRPC channel argument and its value.
ChannelOption = tuple[str, int | str]

#: Reconnect backoff of a long-lived client: first retry after 100 ms, never more than a second
#: between attempts.
QUICK_RECONNECT: tuple[ChannelOption, ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def unix_channel(path: str | Path, *, options: Sequence[ChannelOption] = ()) -> grpc.Channel:
    """A channel to a service's Unix socket."""
    return grpc.insecure_channel(f"unix:{Path(path).absolute()}", options=list(options))


def tls_channel(
    target: str,
    root_ca_pem: bytes,
    *,
    client_certificate_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    server_name: str | None = None,
    options: Sequence[ChannelOption] = (),
) -> grpc.Channel:
    """A TLS channel trusting ``root_ca_pem``; with a client certificate it does mTLS."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_ca_pem,
        private_key=client_key_pem,
        certificate_chain=client_certificate_pem,
    )
    channel_options: list[ChannelOption] = list(options)
    if server_name is not None:
        channel_options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=channel_options)


def wait_ready(channel: grpc.Channel, timeout: float) -> None:
    """Block until the channel connects, or raise ``grpc.FutureTimeoutError``."""
    grpc.channel_ready_future(channel).result(timeout=timeout)
