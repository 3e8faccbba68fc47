"""Where collateral comes from: files, and an Intel PCS v4 or PCCS REST endpoint.

Invariants:

* Every source returns *unverified* :class:`~sgx_verifier.store.CollateralItem` values;
  nothing here decides trust. :class:`sgx_verifier.service.CollateralImporter` checks each
  item's signature and issuer chain before the store sees it.
* File import recognises dcap-qvl's QuoteCollateralV3 JSON, Intel PCS response bodies
  (``{"tcbInfo"...}``, ``{"enclaveIdentity"...}``), Fortanix's ``.tcb``/``.id``/``.crl``
  wrappers and CRLs in DER, PEM or hex; anything else is refused naming those formats.
* The REST client speaks the Intel PCS v4 API (also served by a PCCS): ``GET
  /sgx/certification/v4/tcb?fmspc=``, ``/qe/identity``, ``/pckcrl?ca=processor|platform&
  encoding=der`` (TDX: ``/tdx/certification/v4/tcb`` and ``/qe/identity``). Issuer chains come
  URL-encoded in the ``TCB-Info-Issuer-Chain``, ``SGX-Enclave-Identity-Issuer-Chain`` and
  ``SGX-PCK-CRL-Issuer-Chain`` headers (v3 names accepted too). The root CA CRL is not on the
  PCS API: a PCCS serves ``/sgx/certification/v4/rootcacrl``, Intel publishes it at
  :data:`INTEL_ROOT_CA_CRL_URL`.
* Each response is checked against its request (the FMSPC, the identity id, the CRL issuer's CA
  type) so a mirror cannot answer one question with another document. Bodies are capped at
  :data:`MAX_RESPONSE` bytes, calls have a timeout, and only ``http``/``https`` URLs are used.
"""

from __future__ import annotations

import logging
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from enum import StrEnum
from http.client import HTTPMessage
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.x509.oid import NameOID

from sgx_platform.arch.dcap.collateral import (
    FortanixEnclaveIdentity,
    FortanixTcbInfo,
    QuoteCollateralV3,
)
from sgx_platform.arch.dcap.signed_json import loads_strict
from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.errors import VerificationError
from sgx_verifier.store import CollateralItem

log = logging.getLogger(__name__)

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
MAX_RESPONSE = 4 << 20
DEFAULT_TIMEOUT = 20.0

TCB_INFO_CHAIN_HEADERS = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
IDENTITY_CHAIN_HEADERS = ("SGX-Enclave-Identity-Issuer-Chain",)
PCK_CRL_CHAIN_HEADERS = ("SGX-PCK-CRL-Issuer-Chain",)

FILE_FORMATS = (
    "dcap-qvl QuoteCollateralV3 JSON",
    'Intel PCS response body {"tcbInfo"|"enclaveIdentity":...,"signature":...}',
    "Fortanix .tcb/.id/.crl JSON",
    "a CRL in DER, PEM or hex",
)


class FetchError(VerificationError):
    """A source could not deliver usable collateral (HTTP error, bad response, mismatch)."""


class PckCa(StrEnum):
    """The two PCK intermediate CAs, as the PCS API names them."""

    PROCESSOR = "processor"
    PLATFORM = "platform"

    @property
    def common_name(self) -> str:
        return f"Intel SGX PCK {self.value.capitalize()} CA"


class Tee(StrEnum):
    SGX = "sgx"
    TDX = "tdx"


# ---------------------------------------------------------------------------------------------
# Files


def _pem_chain(pems: tuple[str, ...] | list[str]) -> bytes:
    return "".join(p if p.endswith("\n") else p + "\n" for p in pems).encode()


def items_from_bytes(data: bytes, what: str = "collateral") -> list[CollateralItem]:
    """The collateral items in one file's bytes, in any of :data:`FILE_FORMATS`."""
    stripped = data.lstrip()
    if stripped.startswith(b"{"):
        doc = loads_strict(data, what)
        if not isinstance(doc, dict):
            raise MalformedStructureError(f"{what}: expected a JSON object")
        if "tcb_info" in doc and "qe_identity" in doc:
            collateral = QuoteCollateralV3.from_json(data)
            signed_tcb = collateral.signed_tcb_info
            signed_qe = collateral.signed_qe_identity
            return [
                CollateralItem.tcb_info(
                    signed_tcb.to_response_body(), collateral.tcb_info_issuer_chain.encode()
                ),
                CollateralItem.enclave_identity(
                    signed_qe.to_response_body(), collateral.qe_identity_issuer_chain.encode()
                ),
                CollateralItem.crl(collateral.pck_crl, collateral.pck_crl_issuer_chain.encode()),
                CollateralItem.crl(collateral.root_ca_crl),
            ]
        if set(doc) == {"tcbInfo", "signature"}:
            return [CollateralItem.tcb_info(data)]
        if set(doc) == {"enclaveIdentity", "signature"}:
            return [CollateralItem.enclave_identity(data)]
        if "raw_tcb_info" in doc:
            tcb = FortanixTcbInfo.from_json(data)
            body = tcb.signed.to_response_body()
            return [CollateralItem.tcb_info(body, _pem_chain(tcb.ca_chain))]
        if "raw_enclave_identity" in doc:
            ident = FortanixEnclaveIdentity.from_json(data)
            return [
                CollateralItem.enclave_identity(
                    ident.signed.to_response_body(), _pem_chain(ident.ca_chain)
                )
            ]
        if set(doc) == {"crl", "ca_chain"} and isinstance(doc["crl"], str):
            chain = doc["ca_chain"]
            if not isinstance(chain, list) or not all(isinstance(p, str) for p in chain):
                raise MalformedStructureError(f"{what}: ca_chain must be a list of PEM strings")
            return [CollateralItem.crl(doc["crl"].encode(), _pem_chain(chain))]
        raise MalformedStructureError(
            f"{what}: JSON of an unknown layout; known: {'; '.join(FILE_FORMATS)}"
        )
    try:
        return [CollateralItem.crl(data)]
    except MalformedStructureError:
        raise MalformedStructureError(
            f"{what}: not collateral; known formats: {'; '.join(FILE_FORMATS)}"
        ) from None


def items_from_file(path: Path) -> list[CollateralItem]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FetchError(f"cannot read {path}: {e.strerror or e}") from None
    return items_from_bytes(data, str(path))


# ---------------------------------------------------------------------------------------------
# The PCS / PCCS REST API


@dataclass(frozen=True, slots=True)
class Response:
    body: bytes
    headers: Mapping[str, str]


def _issuer_cn(crl_der: bytes) -> str:
    try:
        crl = x509.load_der_x509_crl(crl_der)
    except ValueError as e:
        raise MalformedStructureError(f"CRL: {e}") from None
    names = crl.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) URLs (no ftp:, file: or data: from a mirror)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise FetchError(f"GET {req.full_url}: refusing a redirect to {newurl!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class PcsClient:
    """Fetches TCB Info, QE Identity and CRLs from an Intel PCS v4 API or a PCCS."""

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        api_key: str | None = None,
        root_ca_crl_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        cafile: Path | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise FetchError(f"{base_url!r} is not an http(s) URL")
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        if root_ca_crl_url is None:
            root_ca_crl_url = (
                INTEL_ROOT_CA_CRL_URL
                if parsed.netloc == urllib.parse.urlsplit(INTEL_PCS_URL).netloc
                else f"{self._base}/sgx/certification/v4/rootcacrl"
            )
        if urllib.parse.urlsplit(root_ca_crl_url).scheme not in ("http", "https"):
            raise FetchError(f"{root_ca_crl_url!r} is not an http(s) URL")
        self._root_ca_crl_url = root_ca_crl_url
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        self._opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(context=context),
            _HttpOnlyRedirects(),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
        ):
            self._opener.add_handler(handler)

    @property
    def base_url(self) -> str:
        return self._base

    def _get(self, url: str) -> Response:
        headers = {"Accept": "application/json, application/pkix-crl, */*"}
        if self._api_key:
            headers["Ocp-Apim-Subscription-Key"] = self._api_key
        request = urllib.request.Request(url, headers=headers, method="GET")  # noqa: S310
        try:
            with self._opener.open(request, timeout=self._timeout) as reply:
                body = reply.read(MAX_RESPONSE + 1)
                message: Message = reply.headers
        except urllib.error.HTTPError as e:
            request_id = e.headers.get("Request-ID", "") if e.headers else ""
            detail = f" (Request-ID {request_id})" if request_id else ""
            raise FetchError(f"GET {url}: HTTP {e.code} {e.reason}{detail}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise FetchError(f"GET {url}: {reason}") from None
        if len(body) > MAX_RESPONSE:
            raise FetchError(f"GET {url}: the response is larger than {MAX_RESPONSE} bytes")
        return Response(body, {k.lower(): v for k, v in message.items()})

    @staticmethod
    def _chain(response: Response, names: tuple[str, ...], url: str) -> bytes:
        for name in names:
            value = response.headers.get(name.lower())
            if value:
                chain = urllib.parse.unquote(value).encode()
                if b"-----BEGIN CERTIFICATE-----" not in chain:
                    raise FetchError(f"GET {url}: the {name} header holds no PEM certificate")
                return chain
        raise FetchError(f"GET {url}: no {names[0]} header (the issuer chain)")

    def tcb_info(self, fmspc: bytes, tee: Tee = Tee.SGX) -> CollateralItem:
        if len(fmspc) != 6:
            raise FetchError(f"an FMSPC is 6 bytes, not {len(fmspc)}")
        query = urllib.parse.urlencode({"fmspc": fmspc.hex()})
        url = f"{self._base}/{tee.value}/certification/v4/tcb?{query}"
        response = self._get(url)
        try:
            item = CollateralItem.tcb_info(
                response.body, self._chain(response, TCB_INFO_CHAIN_HEADERS, url)
            )
        except MalformedStructureError as e:
            raise FetchError(f"GET {url}: not a TCB Info response: {e}") from None
        expected = f"{tee.value.upper()}/{fmspc.hex()}"
        if item.key != expected:
            raise FetchError(f"GET {url}: asked for {expected}, the response is for {item.key}")
        return item

    def qe_identity(self, tee: Tee = Tee.SGX) -> CollateralItem:
        url = f"{self._base}/{tee.value}/certification/v4/qe/identity"
        response = self._get(url)
        try:
            item = CollateralItem.enclave_identity(
                response.body, self._chain(response, IDENTITY_CHAIN_HEADERS, url)
            )
        except MalformedStructureError as e:
            raise FetchError(f"GET {url}: not an Enclave Identity response: {e}") from None
        expected = "QE" if tee is Tee.SGX else "TD_QE"
        if item.key != expected:
            raise FetchError(f"GET {url}: asked for the {expected} identity, got {item.key}")
        return item

    def pck_crl(self, ca: PckCa) -> CollateralItem:
        query = urllib.parse.urlencode({"ca": ca.value, "encoding": "der"})
        url = f"{self._base}/sgx/certification/v4/pckcrl?{query}"
        response = self._get(url)
        chain = self._chain(response, PCK_CRL_CHAIN_HEADERS, url)
        try:
            item = CollateralItem.crl(response.body, chain)
            issuer = _issuer_cn(item.content)
        except MalformedStructureError as e:
            raise FetchError(f"GET {url}: not a CRL: {e}") from None
        if ca.value not in issuer.lower().split():
            raise FetchError(f"GET {url}: asked for the {ca.value} CA's CRL, got {issuer!r}'s")
        return item

    def root_ca_crl(self) -> CollateralItem:
        url = self._root_ca_crl_url
        response = self._get(url)
        try:
            item = CollateralItem.crl(response.body)
            issuer = _issuer_cn(item.content)
        except MalformedStructureError as e:
            raise FetchError(f"GET {url}: not a CRL: {e}") from None
        if "root" not in issuer.lower():
            raise FetchError(f"GET {url}: expected a root CA's CRL, got {issuer!r}'s")
        return item

    def collateral_for(
        self, fmspc: bytes, ca: PckCa, tee: Tee = Tee.SGX
    ) -> list[CollateralItem]:
        """Everything a quote from this platform needs: TCB Info, QE identity, both CRLs."""
        return [
            self.tcb_info(fmspc, tee),
            self.qe_identity(tee),
            self.pck_crl(ca),
            self.root_ca_crl(),
        ]


def describe(items: list[CollateralItem]) -> list[dict[str, object]]:
    """A JSON-able summary of items (for CLI output and logs)."""
    return [
        {
            "id": i.id,
            "kind": i.kind.value,
            "key": i.key,
            "description": i.description,
            "issue_date": i.issue_date,
            "next_update": i.next_update,
            "evaluation_number": i.evaluation_number,
        }
        for i in items
    ]

