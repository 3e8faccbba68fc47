"""Conversion between ``sgx.verifier.v1`` messages and the verifier's domain values.

Invariants: decoding never trusts a field's presence or size; everything that cannot become a
domain value raises :class:`~sgx_verifier.service.InvalidRequestError` (or the domain's own
:class:`~sgx_verifier.policy.PolicyError`) naming the field. A request policy goes through
:meth:`Policy.from_mapping`, the same validation as a TOML file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sgx.verifier.v1 import verifier_pb2 as pb
from sgx_platform.arch.dcap.collateral import QuoteCollateralV3
from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.fetch import PckCa, Tee
from sgx_verifier.policy import Policy
from sgx_verifier.service import (
    InvalidRequestError,
    RefreshTarget,
    VerificationRequest,
    VerificationResult,
)
from sgx_verifier.store import CollateralItem, ExpiryNotice, Placement, PutResult

MAX_COLLATERAL_JSON = 1 << 20
MAX_IDS = 16

_PLACEMENT = {
    Placement.BECAME_LATEST: pb.PLACEMENT_BECAME_LATEST,
    Placement.ALREADY_LATEST: pb.PLACEMENT_ALREADY_LATEST,
    Placement.OLDER_THAN_LATEST: pb.PLACEMENT_OLDER_THAN_LATEST,
}


def policy_from_proto(message: pb.Policy) -> Policy:
    """A request policy; absent fields keep the strict defaults."""
    doc: dict[str, Any] = {}
    if message.HasField("accepted_tcb_statuses"):
        doc["accepted_statuses"] = list(message.accepted_tcb_statuses.values)
    if message.HasField("allow_debug"):
        doc["allow_debug"] = message.allow_debug
    if message.HasField("accepted_advisory_ids"):
        doc["accepted_advisory_ids"] = list(message.accepted_advisory_ids.values)
    if message.HasField("trust_anchors"):
        doc["trust_anchors"] = list(message.trust_anchors.values)
    for name in ("mrenclave", "mrsigner"):
        values: Sequence[bytes] = getattr(message, name)
        if values:
            doc[name] = [v.hex() for v in values]
    if message.HasField("isv_prod_id"):
        doc["isv_prod_id"] = int(message.isv_prod_id)
    if message.HasField("min_isv_svn"):
        doc["min_isv_svn"] = int(message.min_isv_svn)
    if message.HasField("collateral_grace_seconds"):
        doc["collateral_grace_seconds"] = int(message.collateral_grace_seconds)
    if message.HasField("min_tcb_evaluation_data_number"):
        doc["min_tcb_evaluation_data_number"] = int(message.min_tcb_evaluation_data_number)
    if message.HasField("expected_report_data"):
        doc["expected_report_data"] = message.expected_report_data.hex()
    if message.HasField("require_challenge"):
        doc["require_challenge"] = message.require_challenge
    return Policy.from_mapping(doc, "request policy")


def policy_to_proto(policy: Policy) -> pb.Policy:
    """The request form of ``policy``; :func:`policy_from_proto` gives the same policy back."""
    message = pb.Policy(
        accepted_tcb_statuses=pb.StringSet(
            values=sorted(s.value for s in policy.accepted_statuses)
        ),
        allow_debug=policy.allow_debug,
        trust_anchors=pb.StringSet(values=sorted(policy.trust_anchors)),
        mrenclave=sorted(policy.mrenclave),
        mrsigner=sorted(policy.mrsigner),
        require_challenge=policy.require_challenge,
        collateral_grace_seconds=policy.collateral_grace_seconds,
    )
    if policy.accepted_advisory_ids is not None:
        message.accepted_advisory_ids.CopyFrom(
            pb.StringSet(values=sorted(policy.accepted_advisory_ids))
        )
    if policy.isv_prod_id is not None:
        message.isv_prod_id = policy.isv_prod_id
    if policy.min_isv_svn is not None:
        message.min_isv_svn = policy.min_isv_svn
    if policy.expected_report_data is not None:
        message.expected_report_data = policy.expected_report_data
    if policy.min_tcb_evaluation_data_number is not None:
        message.min_tcb_evaluation_data_number = policy.min_tcb_evaluation_data_number
    return message


def verification_request(message: pb.VerifyQuoteRequest) -> VerificationRequest:
    collateral = None
    if message.collateral_json:
        if len(message.collateral_json) > MAX_COLLATERAL_JSON:
            raise InvalidRequestError("COLLATERAL_TOO_LARGE", "collateral_json is too large")
        try:
            collateral = QuoteCollateralV3.from_json(message.collateral_json)
        except MalformedStructureError as e:
            raise InvalidRequestError(
                "COLLATERAL_MALFORMED", f"collateral_json is not QuoteCollateralV3: {e}"
            ) from None
    if len(message.collateral_ids) > MAX_IDS:
        raise InvalidRequestError("COLLATERAL_IDS", f"at most {MAX_IDS} collateral ids")
    for item_id in message.collateral_ids:
        if len(item_id) != 64 or any(c not in "0123456789abcdef" for c in item_id):
            raise InvalidRequestError(
                "COLLATERAL_IDS", f"{item_id[:80]!r} is not a collateral id (64 hex digits)"
            )
    if message.challenge and len(message.challenge) > 1024:
        raise InvalidRequestError("CHALLENGE_MALFORMED", "the challenge is too large")
    return VerificationRequest(
        quote=message.quote,
        collateral=collateral,
        pck_chain=message.pck_chain_pem.encode() if message.pck_chain_pem else None,
        at=message.at if message.HasField("at") else None,
        policy=policy_from_proto(message.policy) if message.HasField("policy") else None,
        challenge=message.challenge or None,
        user_data=message.user_data,
        audience=message.audience or None,
        collateral_ids=tuple(message.collateral_ids),
    )


def verification_response(result: VerificationResult) -> pb.VerifyQuoteResponse:
    verdict = result.verdict
    enclave = verdict.enclave
    anchor = verdict.trust_anchor
    response = pb.VerifyQuoteResponse(
        verified=verdict.verified,
        accepted=result.accepted,
        tcb_status=verdict.tcb_status.value if verdict.tcb_status else "",
        platform_tcb_status=(
            verdict.platform_tcb_status.value if verdict.platform_tcb_status else ""
        ),
        qe_tcb_status=verdict.qe_tcb_status.value if verdict.qe_tcb_status else "",
        advisory_ids=list(verdict.advisory_ids),
        quote_version=verdict.quote_version or 0,
        fmspc=verdict.fmspc or b"",
        collateral=[pb.CollateralRef(name=n, id=i) for n, i in result.collateral],
        failures=[
            pb.CheckFailure(code=f.code.value, check=f.check.value, message=f.message, hint=f.hint)
            for f in verdict.failures
        ],
        policy=pb.PolicyResult(
            passed=result.policy_result.passed,
            policy_hash=result.policy.digest(),
            violations=[
                pb.PolicyViolation(
                    code=v.code.value, message=v.message, hint=v.hint, detail=v.detail
                )
                for v in result.policy_result.violations
            ],
        ),
        token=result.token or "",
        at=result.at,
        quote_sha256=result.quote_sha256,
    )
    if enclave is not None:
        response.enclave.CopyFrom(
            pb.EnclaveIdentity(
                tee=enclave.tee,
                mrenclave=enclave.mrenclave,
                mrsigner=enclave.mrsigner,
                isv_prod_id=enclave.isv_prod_id,
                isv_svn=enclave.isv_svn,
                debug=enclave.debug,
                report_data=enclave.report_data,
                mr_td=enclave.mr_td,
            )
        )
    if anchor is not None:
        response.trust_anchor.CopyFrom(
            pb.TrustAnchor(
                name=anchor.name, key_sha256=anchor.key_sha256, production=anchor.production
            )
        )
        if not anchor.production:
            response.warning = (
                f"trust anchor {anchor.name!r} is a test anchor: this quote proves nothing "
                "about real SGX hardware"
            )
    return response


def imported_item(result: PutResult, description: str, item: CollateralItem) -> pb.ImportedItem:
    message = pb.ImportedItem(
        id=result.id,
        kind=result.kind.value,
        key=result.key,
        description=description,
        issue_date=item.issue_date,
        next_update=item.next_update,
        placement=_PLACEMENT[result.placement],
        reason=result.reason,
        new=result.new,
    )
    if item.evaluation_number is not None:
        message.evaluation_number = item.evaluation_number
    return message


def expiry_notice(notice: ExpiryNotice) -> pb.ExpiryNotice:
    return pb.ExpiryNotice(
        id=notice.id,
        kind=notice.kind.value,
        key=notice.key,
        description=notice.description,
        next_update=notice.next_update,
        seconds_left=notice.seconds_left,
    )


def refresh_target(message: pb.FmspcTarget) -> RefreshTarget:
    if len(message.fmspc) != 6:
        raise InvalidRequestError(
            "FMSPC_MALFORMED", f"an FMSPC is 6 bytes, not {len(message.fmspc)}"
        )
    cas = {pb.PCK_CA_PROCESSOR: PckCa.PROCESSOR, pb.PCK_CA_PLATFORM: PckCa.PLATFORM}
    if message.ca not in cas:
        raise InvalidRequestError("PCK_CA_UNSPECIFIED", "name the PCK CA (processor or platform)")
    tee_name = message.tee.lower() or "sgx"
    try:
        tee = Tee(tee_name)
    except ValueError:
        raise InvalidRequestError(
            "TEE_UNKNOWN", f"tee is sgx or tdx, not {message.tee!r}"
        ) from None
    return RefreshTarget(message.fmspc, cas[message.ca], tee)
