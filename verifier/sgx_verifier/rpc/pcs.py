"""The emulated PCS (``sgx.quoting.v1.ProvisioningService``) as a collateral source, over gRPC.

Invariant: what comes back is unverified; the service's importer checks it like any other
source. The verifier talks to the PCS only through this API, never through its code.
"""

from __future__ import annotations

import grpc

from sgx.quoting.v1 import provisioning_pb2 as pcs_pb
from sgx.quoting.v1 import provisioning_pb2_grpc as pcs_grpc
from sgx_platform.arch.dcap.collateral import QuoteCollateralV3
from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.fetch import FetchError, PckCa
from sgx_verifier.service import COLLATERAL_NAMES, RefreshTarget, items_of
from sgx_verifier.store import CollateralItem

_CA = {PckCa.PROCESSOR: pcs_pb.PCK_CA_PROCESSOR, PckCa.PLATFORM: pcs_pb.PCK_CA_PLATFORM}


class GrpcPcsSource:
    """Fetches collateral with ``GetCollateral`` from the emulated PCS."""

    def __init__(self, channel: grpc.Channel, name: str, *, timeout: float = 20.0) -> None:
        self._stub = pcs_grpc.ProvisioningServiceStub(channel)
        self._name = name
        self._timeout = timeout

    @property
    def name(self) -> str:
        return self._name

    def fetch(self, target: RefreshTarget) -> list[tuple[str, CollateralItem]]:
        if target.quote is not None:
            request = pcs_pb.GetCollateralRequest(quote=target.quote)
        else:
            request = pcs_pb.GetCollateralRequest(
                fmspc=pcs_pb.FmspcTarget(fmspc=target.fmspc, ca=_CA[target.ca])
            )
        try:
            reply = self._stub.GetCollateral(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise FetchError(
                f"{self._name}: GetCollateral: {e.code().name}: {e.details()}"
            ) from None
        try:
            collateral = QuoteCollateralV3.from_json(reply.quote_collateral_json)
            items = items_of(collateral)
        except MalformedStructureError as e:
            raise FetchError(
                f"{self._name}: GetCollateral returned unusable collateral: {e}"
            ) from None
        return [(name, items[name]) for name in COLLATERAL_NAMES]
