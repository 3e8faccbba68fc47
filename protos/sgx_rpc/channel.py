"""Client channels to sgxemu services: Unix sockets and TLS (optionally mTLS)."""

from __future__ import annotations

from pathlib import Path

import grpc


def unix_channel(path: str | Path) -> grpc.Channel:
    """A channel to a service's Unix socket."""
    return grpc.insecure_channel(f"unix:{Path(path).absolute()}")


def tls_channel(
    target: str,
    root_ca_pem: bytes,
    *,
    client_certificate_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    server_name: str | None = None,
) -> grpc.Channel:
    """A TLS channel trusting ``root_ca_pem``; with a client certificate it does mTLS."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_ca_pem,
        private_key=client_key_pem,
        certificate_chain=client_certificate_pem,
    )
    options: list[tuple[str, str]] = []
    if server_name is not None:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=options)


def wait_ready(channel: grpc.Channel, timeout: float) -> None:
    """Block until the channel connects, or raise ``grpc.FutureTimeoutError``."""
    grpc.channel_ready_future(channel).result(timeout=timeout)
