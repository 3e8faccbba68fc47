"""The PCS's gRPC API (``sgx.quoting.v1.ProvisioningService``) as the quoting service uses it.

Implements :class:`~sgx_quoting.ports.PcsPort` (PCK registration) and offers the collateral
and root CA reads the command line needs. Invariants: every failed call raises
:class:`~sgx_quoting.enclave_errors.PcsCallError` carrying the status code name and the
``ErrorInfo`` reason; nothing here reads a file of the PCS; the channel reconnects quickly
after a PCS restart (``QUICK_RECONNECT``: the quoting service is a long-lived client).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from sgx.quoting.v1 import provisioning_pb2 as pb
from sgx.quoting.v1 import provisioning_pb2_grpc as pb_grpc
from sgx_quoting.enclave_errors import PcsCallError
from sgx_quoting.ports import PckChain
from sgx_rpc.channel import QUICK_RECONNECT, unix_channel
from sgx_rpc.errors import error_info

DEFAULT_TIMEOUT = 60.0


class GrpcPcs:
    """:class:`~sgx_quoting.ports.PcsPort` over the ProvisioningService."""

    def __init__(self, channel: grpc.Channel, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._channel = channel
        self._stub = pb_grpc.ProvisioningServiceStub(channel)
        self._timeout = timeout

    @classmethod
    def unix(cls, path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> GrpcPcs:
        return cls(unix_channel(path, options=QUICK_RECONNECT), timeout=timeout)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.RpcError as e:
            info = error_info(e)
            code: grpc.StatusCode = e.code()
            raise PcsCallError(
                "PCS",
                method,
                code.name,
                e.details() or code.name,
                info.reason if info is not None else code.name,
                dict(info.metadata) if info is not None else {},
            ) from None

    def register_pck(
        self, public_key: bytes, *, cpusvn: bytes, pcesvn: int, pce_id: bytes
    ) -> PckChain:
        r: pb.RegisterPckResponse = self._call(
            "RegisterPck",
            pb.RegisterPckRequest(
                pck_public_key=public_key, cpu_svn=cpusvn, pce_svn=pcesvn, pce_id=pce_id
            ),
        )
        return PckChain(
            pem_chain=r.chain.pem_chain,
            cpusvn=r.chain.cpu_svn,
            pcesvn=r.chain.pce_svn,
            revoked=r.chain.revoked,
        )

    def collateral_json(self, quote: bytes) -> str:
        """dcap-qvl's QuoteCollateralV3 JSON for ``quote`` (the PCCS role)."""
        r: pb.GetCollateralResponse = self._call(
            "GetCollateral", pb.GetCollateralRequest(quote=quote)
        )
        return r.quote_collateral_json

    def root_ca_der(self) -> bytes:
        r: pb.GetRootCaResponse = self._call("GetRootCa", pb.GetRootCaRequest())
        return r.root_ca_der
