"""The verification service's domain: collateral selection, appraisal, challenge redemption,
policy and signed results; verified collateral import; the service configuration.

Invariants:

* :meth:`VerifierService.verify` appraises with exactly one collateral set: the caller's, the
  stored items the caller names by id, or the store's (latest, or valid at ``at``). The ids of
  that set (store ids, :func:`sgx_verifier.store.content_id`) are in the result and the token,
  so the same verdict can be re-checked "as of" its time.
* The store's set is looked up under the anchor the quote's PCK chain leads to (its key's
  SHA-256 is the root of every store key, :mod:`sgx_verifier.store`): collateral of another
  PKI is never chosen for a quote, whatever FMSPC or identity id the two PKIs share. A PCK
  chain that leads to no configured anchor looks nothing up: the result is not verified, with
  the chain's failure (as the appraisal reports it), and names no collateral.
* A challenge is redeemed (and so burnt) only for a verified quote, against the REPORTDATA the
  appraisal proved; its refusal is a policy violation, not an RPC error.
* A token is signed only for an accepted result (verified and policy passed) appraised at the
  present (no ``at``, or one within :data:`PRESENT` seconds of now), for one audience; it
  carries the verdict's claims, the quote hash, the collateral ids, the trust anchor and the
  policy hash. An as-of re-verification answers, but never yields a token: a token must not
  let a quote that is unacceptable now pass as acceptable by naming a past time.
* Collateral grace (a policy relaxation, off by default): when an appraisal fails *only*
  because collateral is past its nextUpdate, by no more than the grace, it is redone at the
  last instant at which every item was current, and the result says so.
* :class:`CollateralImporter` stores nothing it has not verified: signed JSON under its issuer
  chain, CRLs under their issuer, chains to a configured anchor, each at the item's own issue
  time; a batch is verified completely before any of it is stored. Each item is stored under
  the anchor it verified to (:meth:`sgx_verifier.store.CollateralItem.under`).
* Bad input raises :class:`InvalidRequestError` with a stable reason; missing collateral raises
  :class:`CollateralUnavailableError`. Nothing is read at import time.
"""

from __future__ import annotations

import hashlib
import logging
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from sgx_platform.arch.dcap.collateral import QuoteCollateralV3
from sgx_platform.arch.dcap.pck import sgx_extension_from_certificate
from sgx_platform.arch.dcap.qe_identity import ENCLAVE_IDENTITY_FIELD, SignedEnclaveIdentity
from sgx_platform.arch.dcap.quote import (
    PckCertChainCertificationData,
    TeeType,
    load_pem_certificates,
    order_certificate_chain,
    parse_quote,
)
from sgx_platform.arch.dcap.tcb_info import TCB_INFO_FIELD, SignedTcbInfo
from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.anchors import AnchorSet, TrustAnchor, load_anchor
from sgx_verifier.certificates import (
    Certificate,
    ValidatedChain,
    build_path,
    parse_certificate,
    parse_certificates,
    validate_chain,
)
from sgx_verifier.challenge import Challenge, ChallengeError, ChallengeService
from sgx_verifier.collateral import Collateral, SignedItem
from sgx_verifier.crl import check_crl, parse_crl
from sgx_verifier.errors import CheckFailedError, VerificationError
from sgx_verifier.fetch import PckCa, PcsClient, Tee
from sgx_verifier.policy import DEFAULT_POLICY, Policy, PolicyFacts, PolicyResult
from sgx_verifier.signatures import raw_signature_to_der, verify_p256
from sgx_verifier.store import (
    CollateralItem,
    CollateralKind,
    CollateralStore,
    ExpiryNotice,
    PutResult,
    anchored_key,
    issuer_key,
    tcb_info_key,
)
from sgx_verifier.token import TokenIssuer
from sgx_verifier.verdict import Check, Failure, FailureCode, Verdict

log = logging.getLogger(__name__)

DEFAULT_ISSUER = "sgxemu-verifier"
DEFAULT_AUDIENCE = "sgxemu"
MAX_QUOTE = 1 << 20
#: How far from now a requested verification time still counts as the present (for tokens).
PRESENT = 300
MAX_USER_DATA = 1 << 16
#: How far ahead expiry is reported by default.
EXPIRY_HORIZON = 7 * 24 * 3600
_FRESHNESS_CODES = frozenset({FailureCode.COLLATERAL_EXPIRED, FailureCode.CRL_EXPIRED})
COLLATERAL_NAMES = ("tcb_info", "qe_identity", "pck_crl", "root_ca_crl")


class InvalidRequestError(VerificationError, ValueError):
    """Unusable input; ``reason`` is a stable UPPER_SNAKE code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class CollateralUnavailableError(VerificationError):
    """The store holds no usable collateral for this quote (import or refresh first)."""

    def __init__(self, message: str, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.missing = tuple(missing)


class ImportRejectedError(VerificationError, ValueError):
    """Collateral offered for import does not verify; nothing of the batch was stored."""

    def __init__(self, item: str, failure: CheckFailedError) -> None:
        super().__init__(f"{item}: {failure.message}")
        self.item = item
        self.code = failure.code
        self.hint = failure.hint


class Appraiser(Protocol):
    """The DCAP appraisal (:func:`sgx_verifier.appraisal.appraise`) as the service calls it."""

    def __call__(
        self,
        quote: bytes,
        collateral: Collateral,
        *,
        at: int,
        anchors: AnchorSet,
        pck_chain: bytes | None,
    ) -> Verdict: ...


# ---------------------------------------------------------------------------------------------
# Requests and results


@dataclass(frozen=True, slots=True)
class VerificationRequest:
    quote: bytes
    collateral: QuoteCollateralV3 | None = None
    pck_chain: bytes | None = None
    at: int | None = None
    policy: Policy | None = None
    challenge: bytes | None = None
    user_data: bytes = b""
    audience: str | None = None
    collateral_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VerificationResult:
    verdict: Verdict
    policy: Policy
    policy_result: PolicyResult
    collateral: tuple[tuple[str, str], ...]
    quote_sha256: bytes
    at: int
    token: str | None = None
    challenge_redeemed: bool = False
    grace_applied: int = 0

    @property
    def accepted(self) -> bool:
        return self.verdict.verified and self.policy_result.passed

    def to_dict(self) -> dict[str, Any]:
        """The ``sgxemu verify --json`` document, with the policy, collateral ids and token."""
        doc = self.verdict.to_dict()
        doc["at"] = self.at
        doc["collateral"] = dict(self.collateral)
        doc["quote_sha256"] = self.quote_sha256.hex()
        doc["policy"] = {**self.policy_result.to_dict(), "hash": self.policy.digest()}
        doc["accepted"] = self.accepted
        if self.grace_applied:
            doc["collateral_grace_applied"] = self.grace_applied
        if self.token is not None:
            doc["token"] = self.token
        return doc


def token_claims(result: VerificationResult) -> dict[str, Any]:
    """The claims a token carries for an accepted result."""
    verdict = result.verdict.to_dict()
    sgx = {
        k: verdict.get(k)
        for k in (
            "verified",
            "tcb_status",
            "platform_tcb_status",
            "qe_tcb_status",
            "advisory_ids",
            "quote_version",
            "tee",
            "mrenclave",
            "mrsigner",
            "isv_prod_id",
            "isv_svn",
            "debug",
            "report_data",
            "fmspc",
            "mr_td",
        )
        if k in verdict
    }
    anchor = result.verdict.trust_anchor
    claims: dict[str, Any] = {
        "sgx": sgx,
        "quote_sha256": result.quote_sha256.hex(),
        "collateral": dict(result.collateral),
        "trust_anchor": (
            {"name": anchor.name, "key_sha256": anchor.key_sha256, "production": anchor.production}
            if anchor is not None
            else None
        ),
        "policy_hash": result.policy.digest(),
        "appraised_at": result.at,
        "challenge_redeemed": result.challenge_redeemed,
    }
    if result.grace_applied:
        claims["collateral_grace_applied"] = result.grace_applied
    if "warning" in verdict:
        claims["warning"] = verdict["warning"]
    return claims


# ---------------------------------------------------------------------------------------------
# Collateral: the quote's platform, assembling a set, verifying imports


@dataclass(frozen=True, slots=True)
class PlatformKeys:
    """Where a quote's collateral lives in the store."""

    tee: str
    fmspc: bytes
    pck_ca_issuer: bytes
    root_issuer: bytes
    pck_ca_name: str = ""
    #: The PCK chain in DER, leaf first (what :meth:`VerifierService.anchor_of` follows).
    pck_chain: tuple[bytes, ...] = ()

    @property
    def pck_ca(self) -> PckCa:
        """Which PCK CA (the PCS API's ``ca`` parameter) issued the platform's certificate."""
        for ca in PckCa:
            if self.pck_ca_name.endswith(f"PCK {ca.value.capitalize()} CA"):
                return ca
        raise InvalidRequestError(
            "PCK_CA_UNKNOWN", f"{self.pck_ca_name!r} is not a PCK Processor or Platform CA"
        )

    @property
    def tcb_info(self) -> str:
        return tcb_info_key(self.tee, self.fmspc)

    @property
    def qe_identity(self) -> str:
        return "TD_QE" if self.tee == "TDX" else "QE"


@lru_cache(maxsize=1024)
def _chain_keys(chain_pem: bytes) -> tuple[bytes, bytes, bytes, str, tuple[bytes, ...]]:
    """(FMSPC, PCK CA name DER, root issuer DER, PCK CA common name, chain DER leaf first) of a
    PCK chain: a pure function of its bytes, cached (decoding the SGX extension is the costly
    part)."""
    try:
        chain = order_certificate_chain(load_pem_certificates(chain_pem))
        leaf = chain[0]
        extension = sgx_extension_from_certificate(leaf)
        names = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
        return (
            bytes(extension.fmspc),
            leaf.issuer.public_bytes(),
            chain[-1].issuer.public_bytes(),
            str(names[0].value) if names else "",
            tuple(c.public_bytes(Encoding.DER) for c in chain),
        )
    except ValueError as e:  # MalformedStructureError, or cryptography's own
        raise InvalidRequestError("PCK_CHAIN_MALFORMED", f"the PCK chain: {e}") from None


def platform_keys(quote_bytes: bytes, pck_chain: bytes | None = None) -> PlatformKeys:
    """The store keys of a quote's collateral, from its PCK certificate chain."""
    try:
        quote = parse_quote(quote_bytes, allow_trailing_zero_padding=True)
    except MalformedStructureError as e:
        raise InvalidRequestError("QUOTE_MALFORMED", f"the quote does not parse: {e}") from None
    certification = quote.certification_data
    if isinstance(certification, PckCertChainCertificationData):
        chain_pem = certification.data
    elif pck_chain is not None:
        chain_pem = pck_chain
    else:
        raise InvalidRequestError(
            "PCK_CHAIN_REQUIRED",
            "the quote carries no PCK certificate chain; send it (pck_chain_pem)",
        )
    fmspc, pck_ca_issuer, root_issuer, ca_name, chain = _chain_keys(bytes(chain_pem))
    tee = "TDX" if quote.header.tee_type is TeeType.TDX else "SGX"
    return PlatformKeys(tee, fmspc, pck_ca_issuer, root_issuer, ca_name, chain)


def _signed_parts(item: CollateralItem) -> tuple[str, bytes]:
    return _split_signed(item.kind, item.content)


@lru_cache(maxsize=256)
def _split_signed(kind: CollateralKind, content: bytes) -> tuple[str, bytes]:
    """(signed text, r||s) of stored signed JSON: a pure function of its bytes, cached."""
    if kind is CollateralKind.TCB_INFO:
        tcb = SignedTcbInfo.from_response_body(content)
        return tcb.body_text, tcb.signature
    identity = SignedEnclaveIdentity.from_response_body(content)
    return identity.body_text, identity.signature


def assemble(items: Mapping[str, CollateralItem]) -> Collateral:
    """The appraisal's collateral from stored items named as :data:`COLLATERAL_NAMES`."""
    tcb_text, tcb_sig = _signed_parts(items["tcb_info"])
    qe_text, qe_sig = _signed_parts(items["qe_identity"])
    return Collateral(
        tcb_info=SignedItem(
            TCB_INFO_FIELD, tcb_text, tcb_sig, items["tcb_info"].issuer_chain or b""
        ),
        qe_identity=SignedItem(
            ENCLAVE_IDENTITY_FIELD, qe_text, qe_sig, items["qe_identity"].issuer_chain or b""
        ),
        pck_crl=items["pck_crl"].content,
        root_ca_crl=items["root_ca_crl"].content,
        pck_crl_issuer_chain=items["pck_crl"].issuer_chain or b"",
    )


def items_of(collateral: QuoteCollateralV3) -> dict[str, CollateralItem]:
    """The store items of a QuoteCollateralV3 (for their ids and windows)."""
    return {
        "tcb_info": CollateralItem.tcb_info(
            collateral.signed_tcb_info.to_response_body(),
            collateral.tcb_info_issuer_chain.encode(),
        ),
        "qe_identity": CollateralItem.enclave_identity(
            collateral.signed_qe_identity.to_response_body(),
            collateral.qe_identity_issuer_chain.encode(),
        ),
        "pck_crl": CollateralItem.crl(
            collateral.pck_crl, collateral.pck_crl_issuer_chain.encode()
        ),
        "root_ca_crl": CollateralItem.crl(collateral.root_ca_crl),
    }


def _check_ca_path(chain: ValidatedChain, at: int) -> None:
    """A CRL issuer's path: every certificate a CA valid at ``at``, the first allowed to sign
    CRLs (``validate_chain`` is for end-entity signers)."""
    anchor = chain.anchor
    for index, cert in enumerate(chain.path):
        problem = None
        if not cert.not_before <= at <= cert.not_after:
            problem = (FailureCode.CERT_EXPIRED, f"{cert.subject_text!r} is not valid at {at}")
        elif cert.is_ca is not True:
            problem = (FailureCode.CERT_NOT_CA, f"{cert.subject_text!r} is not a CA")
        elif index == 0 and cert.crl_sign is False:
            problem = (FailureCode.CERT_KEY_USAGE, f"{cert.subject_text!r} may not sign CRLs")
        if problem is not None:
            raise CheckFailedError(
                problem[0], Check.PCK_CRL, f"CRL issuer: {problem[1]}", "fetch the CRL again"
            )
    if not anchor.not_before <= at <= anchor.not_after:
        raise CheckFailedError(
            FailureCode.ANCHOR_EXPIRED,
            Check.PCK_CRL,
            f"CRL issuer: anchor {anchor.name!r} is not valid at {at}",
            "configure the anchor's current issuance",
        )


class CollateralImporter:
    """Verifies collateral against the configured anchors, then stores it."""

    def __init__(self, store: CollateralStore, anchors: AnchorSet) -> None:
        self._store = store
        self._anchors = anchors

    def _signer(
        self, item: CollateralItem, check: Check, what: str
    ) -> tuple[Certificate, TrustAnchor]:
        if not item.issuer_chain:
            raise CheckFailedError(
                FailureCode.CHAIN_INCOMPLETE,
                check,
                f"{what} came without its issuer chain",
                "import the PCS response with its issuer-chain header, or the "
                "QuoteCollateralV3 file that carries it",
            )
        try:
            pool = parse_certificates(item.issuer_chain)
        except MalformedStructureError as e:
            raise CheckFailedError(
                FailureCode.CERT_MALFORMED, check, f"{what}: issuer chain: {e}", "fetch it again"
            ) from None
        leaves = [c for c in pool if not c.is_ca] or list(pool[:1])
        chain = validate_chain(leaves[0], pool, self._anchors, item.issue_date, check, what)
        signer = chain.leaf if not chain.leaf.is_ca or len(chain.path) == 1 else chain.path[0]
        return signer, chain.anchor

    def verify(self, item: CollateralItem) -> TrustAnchor:
        """The anchor ``item`` chains to; :class:`CheckFailedError` unless it verifies at its
        issue time."""
        if item.kind in (CollateralKind.TCB_INFO, CollateralKind.ENCLAVE_IDENTITY):
            tcb = item.kind is CollateralKind.TCB_INFO
            check = Check.TCB_INFO_CHAIN if tcb else Check.QE_IDENTITY_CHAIN
            what = "TCB Info" if tcb else "QE Identity"
            signer, anchor = self._signer(item, check, what)
            text, signature = _signed_parts(item)
            assert signer.public_point is not None
            verify_p256(
                signer.public_point,
                text.encode(),
                raw_signature_to_der(signature),
                code=FailureCode.COLLATERAL_SIGNATURE_INVALID,
                check=Check.TCB_INFO_SIGNATURE if tcb else Check.QE_IDENTITY_SIGNATURE,
                what=what,
                hint="the document was altered or signed by another key; fetch it again",
            )
            return anchor
        crl = parse_crl(item.content)
        # A root CA CRL: by the anchor of that name whose key signed it (two anchors, Intel's
        # and a look-alike test root, may share a name).
        refusal: CheckFailedError | None = None
        for anchor in self._anchors.by_subject(crl.issuer):
            try:
                check_crl(
                    crl,
                    anchor.subject_der,
                    anchor.public_point,
                    anchor.name,
                    crl.this_update,
                    Check.ROOT_CRL,
                    "root CA CRL",
                )
            except CheckFailedError as e:
                refusal = refusal or e
                continue
            return anchor
        if refusal is not None:
            raise refusal
        if not item.issuer_chain:
            raise CheckFailedError(
                FailureCode.CHAIN_INCOMPLETE,
                Check.PCK_CRL,
                f"the CRL of {crl.issuer_text!r} came without its issuer chain and is not "
                "issued by a configured anchor",
                "import the CRL with its SGX-PCK-CRL-Issuer-Chain, or configure its root",
            )
        try:
            pool = parse_certificates(item.issuer_chain)
        except MalformedStructureError as e:
            raise CheckFailedError(
                FailureCode.CERT_MALFORMED, Check.PCK_CRL, f"CRL issuer chain: {e}", "fetch again"
            ) from None
        issuer = next((c for c in pool if c.subject == crl.issuer), None)
        if issuer is None or issuer.public_point is None:
            raise CheckFailedError(
                FailureCode.CRL_ISSUER_MISMATCH,
                Check.PCK_CRL,
                f"the issuer chain does not hold the CRL's issuer {crl.issuer_text!r}",
                "import the CRL with the chain of the CA that issued it",
            )
        path = build_path(issuer, pool, self._anchors, Check.PCK_CRL, "CRL issuer")
        _check_ca_path(path, crl.this_update)
        check_crl(
            crl,
            issuer.subject,
            issuer.public_point,
            issuer.subject_text,
            crl.this_update,
            Check.PCK_CRL,
            f"the CRL of {issuer.subject_text!r}",
        )
        return path.anchor

    def import_items(
        self, items: Sequence[tuple[str, CollateralItem]], *, source: str, now: int | None = None
    ) -> list[PutResult]:
        """Verify every (name, item), then store them all, each under the anchor it verified
        to; nothing is stored if one fails."""
        verified: list[CollateralItem] = []
        for name, item in items:
            try:
                anchor = self.verify(item)
            except CheckFailedError as failure:
                raise ImportRejectedError(f"{name} ({item.description})", failure) from None
            verified.append(item.under(anchor.key_sha256))
        return [self._store.put(item, source=source, now=now) for item in verified]


# ---------------------------------------------------------------------------------------------
# Sources to refresh from


@dataclass(frozen=True, slots=True)
class RefreshTarget:
    """What to refresh: a platform family (and the quote, for sources that take one)."""

    fmspc: bytes
    ca: PckCa
    tee: Tee = Tee.SGX
    quote: bytes | None = None


class CollateralSource(Protocol):
    """A PCS or PCCS the verifier refreshes collateral from."""

    @property
    def name(self) -> str: ...

    def fetch(self, target: RefreshTarget) -> list[tuple[str, CollateralItem]]: ...


class RestSource:
    """An Intel PCS v4 API or a PCCS over HTTPS (:class:`sgx_verifier.fetch.PcsClient`)."""

    def __init__(self, client: PcsClient) -> None:
        self._client = client

    @property
    def name(self) -> str:
        return self._client.base_url

    def fetch(self, target: RefreshTarget) -> list[tuple[str, CollateralItem]]:
        items = self._client.collateral_for(target.fmspc, target.ca, target.tee)
        return list(zip(COLLATERAL_NAMES, items, strict=True))


class NoSourceError(VerificationError):
    """RefreshCollateral was asked of a verifier with no PCS configured."""


# ---------------------------------------------------------------------------------------------
# The service


class VerifierService:
    """Challenges, appraisal with policy and tokens, collateral import and expiry reports."""

    def __init__(
        self,
        *,
        store: CollateralStore,
        anchors: AnchorSet,
        challenges: ChallengeService,
        tokens: TokenIssuer,
        appraise: Appraiser,
        default_policy: Policy = DEFAULT_POLICY,
        default_audience: str = DEFAULT_AUDIENCE,
        source: CollateralSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.anchors = anchors
        self.challenges = challenges
        self.tokens = tokens
        self.importer = CollateralImporter(store, anchors)
        self._appraise = appraise
        self.default_policy = default_policy
        self.default_audience = default_audience
        self.source = source
        self._clock = clock

    def now(self) -> int:
        return int(self._clock())

    # -- collateral ----------------------------------------------------------------------

    def anchor_of(self, keys: PlatformKeys) -> TrustAnchor:
        """The configured anchor the quote's PCK chain leads to, by signatures only (the
        appraisal checks the rest); :class:`CheckFailedError` (``PCK_CHAIN``) when none."""
        try:
            pool = tuple(parse_certificate(der) for der in keys.pck_chain)
        except MalformedStructureError as e:
            raise InvalidRequestError("PCK_CHAIN_MALFORMED", f"the PCK chain: {e}") from None
        if not pool:
            raise InvalidRequestError("PCK_CHAIN_MALFORMED", "the PCK chain is empty")
        return build_path(pool[0], pool, self.anchors, Check.PCK_CHAIN, "PCK").anchor

    def _stored_set(
        self, keys: PlatformKeys, anchor: TrustAnchor, at: int | None, grace: int = 0
    ) -> dict[str, CollateralItem]:
        root = anchor.key_sha256
        wanted = {
            "tcb_info": (CollateralKind.TCB_INFO, anchored_key(keys.tcb_info, root)),
            "qe_identity": (CollateralKind.ENCLAVE_IDENTITY, anchored_key(keys.qe_identity, root)),
            "pck_crl": (CollateralKind.CRL, anchored_key(issuer_key(keys.pck_ca_issuer), root)),
            "root_ca_crl": (CollateralKind.CRL, anchored_key(issuer_key(anchor.subject_der), root)),
        }
        found: dict[str, CollateralItem] = {}
        missing = []
        for name, (kind, key) in wanted.items():
            if at is None:
                stored = self.store.latest(kind, key)
            else:
                stored = self.store.as_of(kind, key, at)
                if stored is None and grace:
                    stored = self.store.as_of(kind, key, at - grace)
            if stored is None:
                missing.append(name)
            else:
                found[name] = stored.item
        if missing:
            when = "now" if at is None else f"valid at {at}"
            raise CollateralUnavailableError(
                f"the collateral store has no {', '.join(missing)} {when} for "
                f"{keys.tcb_info} under trust anchor {anchor.name!r}; import it (sgxemu "
                "verifier collateral import) or refresh it",
                missing,
            )
        return found

    def _named_set(self, ids: Sequence[str]) -> dict[str, CollateralItem]:
        found: dict[str, CollateralItem] = {}
        for item_id in ids:
            try:
                item = self.store.get(item_id).item
            except VerificationError:
                raise InvalidRequestError(
                    "COLLATERAL_UNKNOWN", f"no stored collateral with id {item_id}"
                ) from None
            if item.kind is CollateralKind.TCB_INFO:
                name = "tcb_info"
            elif item.kind is CollateralKind.ENCLAVE_IDENTITY:
                name = "qe_identity"
            else:
                issuer = parse_crl(item.content).issuer
                by_anchor = any(a.subject_der == issuer for a in self.anchors)
                name = "root_ca_crl" if by_anchor else "pck_crl"
            if name in found:
                raise InvalidRequestError(
                    "COLLATERAL_IDS", f"two collateral ids name a {name}"
                )
            found[name] = item
        missing = [n for n in COLLATERAL_NAMES if n not in found]
        if missing:
            raise InvalidRequestError(
                "COLLATERAL_IDS", f"the collateral ids name no {', '.join(missing)}"
            )
        return found

    def import_items(
        self, items: Sequence[tuple[str, CollateralItem]], *, source: str
    ) -> list[PutResult]:
        return self.importer.import_items(items, source=source, now=self.now())

    def refresh_target(self, quote: bytes, pck_chain: bytes | None = None) -> RefreshTarget:
        keys = platform_keys(quote, pck_chain)
        return RefreshTarget(keys.fmspc, keys.pck_ca, Tee(keys.tee.lower()), quote)

    def refresh(
        self, target: RefreshTarget
    ) -> tuple[str, list[tuple[str, CollateralItem]], list[PutResult]]:
        """Fetch the target's collateral from the configured source, verify and store it."""
        if self.source is None:
            raise NoSourceError(
                "this verifier has no PCS or PCCS configured ([pcs] url or grpc in "
                "verifier.toml); import collateral files instead"
            )
        items = self.source.fetch(target)
        return self.source.name, items, self.import_items(items, source=self.source.name)

    def expiring(self, within: int = EXPIRY_HORIZON) -> list[ExpiryNotice]:
        return list(self.store.expiring(now=self.now(), within=within))

    # -- verification ----------------------------------------------------------------------

    def verify(self, request: VerificationRequest) -> VerificationResult:
        now = self.now()
        if not request.quote:
            raise InvalidRequestError("QUOTE_EMPTY", "no quote was sent")
        if len(request.quote) > MAX_QUOTE:
            raise InvalidRequestError("QUOTE_TOO_LARGE", f"a quote is at most {MAX_QUOTE} bytes")
        if len(request.user_data) > MAX_USER_DATA:
            raise InvalidRequestError(
                "USER_DATA_TOO_LARGE", f"user data is at most {MAX_USER_DATA} bytes"
            )
        if request.user_data and not request.challenge:
            raise InvalidRequestError("USER_DATA_WITHOUT_CHALLENGE", "user data needs a challenge")
        if request.at is not None and not 0 <= request.at < 1 << 40:
            raise InvalidRequestError("TIME_OUT_OF_RANGE", f"time {request.at} is out of range")
        if request.collateral is not None and request.collateral_ids:
            raise InvalidRequestError(
                "COLLATERAL_TWICE", "send collateral or collateral ids, not both"
            )
        try:
            parsed = parse_quote(request.quote, allow_trailing_zero_padding=True)
        except MalformedStructureError as e:
            raise InvalidRequestError("QUOTE_MALFORMED", f"the quote does not parse: {e}") from None
        if request.challenge is not None:
            try:
                Challenge.from_bytes(request.challenge)
            except MalformedStructureError as e:
                raise InvalidRequestError("CHALLENGE_MALFORMED", str(e)) from None
        policy = request.policy or self.default_policy
        at = now if request.at is None else request.at

        collateral: Collateral | None = None
        items: dict[str, CollateralItem] = {}
        verdict = Verdict()
        if request.collateral is not None:
            items = items_of(request.collateral)
            collateral = Collateral.from_quote_collateral_v3(request.collateral)
        elif request.collateral_ids:
            items = self._named_set(request.collateral_ids)
            collateral = assemble(items)
        else:
            keys = platform_keys(request.quote, request.pck_chain)
            try:
                anchor = self.anchor_of(keys)
            except CheckFailedError as e:
                # Another PKI's quote: no collateral is looked up (none here is trusted for
                # it), and its chain fails as the appraisal reports it.
                verdict = Verdict(
                    failures=(Failure(e.code, e.check, e.message, e.hint),),
                    quote_version=parsed.header.version,
                    fmspc=keys.fmspc,
                    at=at,
                )
            else:
                items = self._stored_set(keys, anchor, request.at, policy.collateral_grace_seconds)
                collateral = assemble(items)

        grace_applied = 0
        if collateral is not None:
            verdict = self._appraise(
                request.quote, collateral, at=at, anchors=self.anchors, pck_chain=request.pck_chain
            )
            if not verdict.verified and policy.collateral_grace_seconds:
                verdict, grace_applied, at = self._with_grace(
                    request, collateral, items, verdict, at, policy.collateral_grace_seconds
                )

        facts = PolicyFacts(
            challenge_presented=bool(request.challenge),
            tcb_evaluation_data_number=(
                items["tcb_info"].evaluation_number if "tcb_info" in items else None
            ),
        )
        redeemed = False
        if request.challenge and verdict.verified and verdict.enclave is not None:
            try:
                self.challenges.redeem(
                    request.challenge, verdict.enclave.report_data, request.user_data, now=now
                )
                redeemed = True
            except ChallengeError as e:
                facts = replace(facts, challenge_error=e)
        policy_result = policy.evaluate(verdict, facts)
        result = VerificationResult(
            verdict=verdict,
            policy=policy,
            policy_result=policy_result,
            collateral=tuple((name, items[name].id) for name in COLLATERAL_NAMES if name in items),
            quote_sha256=hashlib.sha256(request.quote).digest(),
            at=at,
            challenge_redeemed=redeemed,
            grace_applied=grace_applied,
        )
        present = request.at is None or abs(request.at - now) <= PRESENT
        if result.accepted and present:
            token = self.tokens.sign(
                token_claims(result),
                audience=request.audience or self.default_audience,
                subject=f"sha256:{result.quote_sha256.hex()}",
                now=now,
            )
            result = replace(result, token=token)
        if not result.accepted:
            enclave = verdict.enclave
            log.info(
                "quote %s rejected: %s; mrenclave=%s mrsigner=%s",
                result.quote_sha256.hex()[:16],
                ",".join(v.code.value for v in policy_result.violations),
                enclave.mrenclave.hex() if enclave else "-",
                enclave.mrsigner.hex() if enclave else "-",
            )
        return result

    def _with_grace(
        self,
        request: VerificationRequest,
        collateral: Collateral,
        items: Mapping[str, CollateralItem],
        verdict: Verdict,
        at: int,
        grace: int,
    ) -> tuple[Verdict, int, int]:
        if not verdict.failures or not set(verdict.codes()) <= _FRESHNESS_CODES:
            return verdict, 0, at
        newest_issue = max(i.issue_date for i in items.values())
        # The last second at which every item was current (nextUpdate itself counts as
        # stale, as webpki and the appraisal treat it).
        last_current = min(i.next_update for i in items.values()) - 1
        if newest_issue > last_current or at - last_current > grace or last_current >= at:
            return verdict, 0, at
        retry = self._appraise(
            request.quote,
            collateral,
            at=last_current,
            anchors=self.anchors,
            pck_chain=request.pck_chain,
        )
        if not retry.verified:
            return verdict, 0, at
        log.warning(
            "collateral grace: appraised as of %d, %d s before now, as the policy allows",
            last_current,
            at - last_current,
        )
        return retry, at - last_current, last_current


# ---------------------------------------------------------------------------------------------
# Configuration


class ConfigError(VerificationError, ValueError):
    """An unusable verifier configuration."""


_CONFIG_KEYS: Mapping[str, frozenset[str]] = {
    "server": frozenset(
        {
            "listen",
            "tls_certificate",
            "tls_key",
            "client_ca",
            "admin_socket",
            "admin_listen",
            "admin_common_name",
            "metrics_listen",
        }
    ),
    "storage": frozenset({"collateral_db", "replay_db", "challenge_key", "token_keys"}),
    "tokens": frozenset({"issuer", "audience", "lifetime", "max_lifetime"}),
    "challenges": frozenset({"ttl"}),
    "policy": frozenset({"file"}),
    "pcs": frozenset({"url", "grpc", "ca"}),
}


@dataclass(frozen=True, slots=True)
class AnchorConfig:
    name: str
    certificate: Path


@dataclass(frozen=True, slots=True)
class VerifierConfig:
    """``verifier.toml``: where the service listens and keeps its state.

    Relative paths are relative to the configuration file's directory.
    """

    listen: str = "127.0.0.1:7443"
    tls_certificate: Path = Path("tls/verifier.pem")
    tls_key: Path = Path("tls/verifier.key")
    client_ca: Path | None = None
    admin_socket: Path | None = None
    admin_listen: str | None = None
    admin_common_name: str = "sgxemu-admin"
    metrics_listen: str | None = None
    collateral_db: Path = Path("collateral.sqlite")
    replay_db: Path = Path("replay.sqlite")
    challenge_key: Path = Path("challenge.key")
    token_keys: Path = Path("token-keys")
    token_issuer: str = DEFAULT_ISSUER
    token_audience: str = DEFAULT_AUDIENCE
    token_lifetime: int = 600
    token_max_lifetime: int = 3600
    challenge_ttl: int = 300
    anchors: tuple[AnchorConfig, ...] = ()
    policy_file: Path | None = None
    pcs_url: str | None = None
    pcs_grpc: str | None = None
    pcs_ca: Path | None = None
    base_dir: Path = field(default=Path("."), compare=False)

    @classmethod
    def from_toml(cls, text: str, base_dir: Path, source: str = "verifier.toml") -> VerifierConfig:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: not valid TOML: {e}") from None
        unknown = set(doc) - set(_CONFIG_KEYS) - {"anchors"}
        if unknown:
            raise ConfigError(f"{source}: unknown sections {sorted(unknown)}")
        args: dict[str, Any] = {"base_dir": base_dir}

        def section(name: str) -> dict[str, Any]:
            value = doc.get(name, {})
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{name}] must be a table")
            extra = set(value) - _CONFIG_KEYS[name]
            if extra:
                raise ConfigError(f"{source}: unknown keys in [{name}]: {sorted(extra)}")
            return value

        def path(value: object, key: str) -> Path:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{source}: {key} must be a path")
            p = Path(value).expanduser()
            return p if p.is_absolute() else base_dir / p

        def text_value(value: object, key: str) -> str:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{source}: {key} must be a non-empty string")
            return value

        def number(value: object, key: str) -> int:
            if type(value) is not int or value <= 0:
                raise ConfigError(f"{source}: {key} must be a positive integer")
            return value

        server = section("server")
        for key in ("listen", "metrics_listen", "admin_listen", "admin_common_name"):
            if key in server:
                args[key] = text_value(server[key], key)
        for key in ("tls_certificate", "tls_key", "client_ca", "admin_socket"):
            if key in server:
                args[key] = path(server[key], key)
        storage = section("storage")
        for key in ("collateral_db", "replay_db", "challenge_key", "token_keys"):
            if key in storage:
                args[key] = path(storage[key], key)
        tokens = section("tokens")
        for key in ("issuer", "audience"):
            if key in tokens:
                args[f"token_{key}"] = text_value(tokens[key], key)
        for key in ("lifetime", "max_lifetime"):
            if key in tokens:
                args[f"token_{key}"] = number(tokens[key], key)
        challenges = section("challenges")
        if "ttl" in challenges:
            args["challenge_ttl"] = number(challenges["ttl"], "ttl")
        policy = section("policy")
        if "file" in policy:
            args["policy_file"] = path(policy["file"], "policy.file")
        pcs = section("pcs")
        if "url" in pcs:
            args["pcs_url"] = text_value(pcs["url"], "pcs.url")
        if "grpc" in pcs:
            args["pcs_grpc"] = text_value(pcs["grpc"], "pcs.grpc")
        if "ca" in pcs:
            args["pcs_ca"] = path(pcs["ca"], "pcs.ca")
        anchors = doc.get("anchors", [])
        if not isinstance(anchors, list):
            raise ConfigError(f"{source}: [[anchors]] must be an array of tables")
        parsed = []
        for entry in anchors:
            if not isinstance(entry, dict) or set(entry) != {"name", "certificate"}:
                raise ConfigError(f"{source}: each [[anchors]] has exactly name and certificate")
            parsed.append(
                AnchorConfig(text_value(entry["name"], "name"), path(entry["certificate"], "cert"))
            )
        args["anchors"] = tuple(parsed)
        return cls(**args)

    @classmethod
    def load(cls, path: Path) -> VerifierConfig:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
        return cls.from_toml(text, path.parent, str(path))

    def resolve(self, value: Path) -> Path:
        return value if value.is_absolute() else self.base_dir / value

    def anchor_set(self) -> AnchorSet:
        """The Intel root plus each configured anchor."""
        anchors: list[TrustAnchor] = list(AnchorSet.default())
        for entry in self.anchors:
            try:
                data = self.resolve(entry.certificate).read_bytes()
            except OSError as e:
                raise ConfigError(f"anchor {entry.name}: {e.strerror or e}") from None
            anchor = load_anchor(data, entry.name)
            if all(a.spki_der != anchor.spki_der for a in anchors):
                anchors.append(anchor)
        return AnchorSet.of(anchors)

    def default_policy(self) -> Policy:
        """The policy file's, else the strict default; configured anchors are allowed."""
        base = (
            Policy.load(self.resolve(self.policy_file)) if self.policy_file else DEFAULT_POLICY
        )
        if self.policy_file:
            return base
        return base.with_anchors(a.name for a in self.anchors)


def anchor_names(anchors: Iterable[TrustAnchor]) -> list[str]:
    return [a.name for a in anchors]
