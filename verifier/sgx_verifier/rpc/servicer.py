"""The thin ``QuoteVerificationService`` servicer: decode, call the domain, encode.

Invariants: authorization is the interceptor's (sgx_rpc); every failure leaves through
:func:`_fail` and the status table (:mod:`sgx_verifier.rpc.status`); an unexpected error is
INTERNAL with a generic message and its details in the log only. Every VerifyQuote is counted
by result with its latency.
"""

from __future__ import annotations

import json
import logging
import time
from typing import NoReturn

import grpc

from sgx.verifier.v1 import verifier_pb2 as pb
from sgx.verifier.v1 import verifier_pb2_grpc as pb_grpc
from sgx_rpc.errors import abort_with
from sgx_verifier.fetch import items_from_bytes
from sgx_verifier.rpc import convert
from sgx_verifier.rpc.metrics import VerifierMetrics
from sgx_verifier.rpc.status import DOMAIN, status_of
from sgx_verifier.service import InvalidRequestError, VerifierService
from sgx_verifier.store import CollateralItem, PutResult

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["QuoteVerificationService"].full_name
MAX_FILES = 64
MAX_FILE = 4 << 20


def _fail(context: grpc.ServicerContext, error: BaseException) -> NoReturn:
    abort_with(context, status_of(error), error, domain=DOMAIN)


def _imported(
    results: list[PutResult], items: list[tuple[str, CollateralItem]]
) -> list[pb.ImportedItem]:
    return [
        convert.imported_item(result, item.description, item)
        for result, (_, item) in zip(results, items, strict=True)
    ]


class QuoteVerificationServicer(pb_grpc.QuoteVerificationServiceServicer):
    def __init__(self, service: VerifierService, metrics: VerifierMetrics) -> None:
        self._service = service
        self._metrics = metrics

    def VerifyQuote(
        self, request: pb.VerifyQuoteRequest, context: grpc.ServicerContext
    ) -> pb.VerifyQuoteResponse:
        started = time.perf_counter()
        try:
            result = self._service.verify(convert.verification_request(request))
            response = convert.verification_response(result)
        except Exception as e:  # every failure goes through the status table
            self._metrics.observe(
                "invalid" if status_of(e) is not None else "error", time.perf_counter() - started
            )
            _fail(context, e)
        if result.accepted:
            outcome = "accepted"
        elif result.verdict.verified:
            outcome = "rejected"
        else:
            outcome = "not_verified"
        self._metrics.observe(outcome, time.perf_counter() - started)
        return response

    def CreateChallenge(
        self, request: pb.CreateChallengeRequest, context: grpc.ServicerContext
    ) -> pb.CreateChallengeResponse:
        try:
            challenge = self._service.challenges.issue(
                now=self._service.now(), ttl=request.ttl_seconds or None
            )
        except Exception as e:
            _fail(context, e)
        self._metrics.challenges.inc()
        return pb.CreateChallengeResponse(
            challenge=challenge.to_bytes(),
            issued_at=challenge.issued_at,
            expires_at=challenge.expires_at,
        )

    def GetJwks(
        self, request: pb.GetJwksRequest, context: grpc.ServicerContext
    ) -> pb.GetJwksResponse:
        try:
            jwks = self._service.tokens.keyring.jwks(now=self._service.now())
        except Exception as e:
            _fail(context, e)
        return pb.GetJwksResponse(jwks_json=json.dumps(jwks, sort_keys=True))

    def ImportCollateral(
        self, request: pb.ImportCollateralRequest, context: grpc.ServicerContext
    ) -> pb.ImportCollateralResponse:
        try:
            if not request.files:
                raise InvalidRequestError("NO_FILES", "send at least one collateral file")
            if len(request.files) > MAX_FILES:
                raise InvalidRequestError("TOO_MANY_FILES", f"at most {MAX_FILES} files per call")
            items: list[tuple[str, CollateralItem]] = []
            for index, file in enumerate(request.files):
                name = file.name or f"file {index}"
                if len(file.content) > MAX_FILE:
                    raise InvalidRequestError("FILE_TOO_LARGE", f"{name} is over {MAX_FILE} bytes")
                items.extend((name, item) for item in items_from_bytes(file.content, name))
            results = self._service.import_items(items, source="ImportCollateral")
            expiring = self._service.expiring()
        except Exception as e:
            _fail(context, e)
        for result in results:
            self._metrics.imports.labels(result.placement.value).inc()
        return pb.ImportCollateralResponse(
            items=_imported(results, items),
            expiring=[convert.expiry_notice(n) for n in expiring],
        )

    def RefreshCollateral(
        self, request: pb.RefreshCollateralRequest, context: grpc.ServicerContext
    ) -> pb.RefreshCollateralResponse:
        try:
            which = request.WhichOneof("target")
            if which == "quote":
                target = self._service.refresh_target(request.quote)
            elif which == "fmspc":
                target = convert.refresh_target(request.fmspc)
            else:
                raise InvalidRequestError("NO_TARGET", "name a quote or an FMSPC and PCK CA")
            source, items, results = self._service.refresh(target)
            expiring = self._service.expiring()
        except Exception as e:
            _fail(context, e)
        for result in results:
            self._metrics.imports.labels(result.placement.value).inc()
        return pb.RefreshCollateralResponse(
            items=_imported(results, items),
            expiring=[convert.expiry_notice(n) for n in expiring],
            source=source,
        )
