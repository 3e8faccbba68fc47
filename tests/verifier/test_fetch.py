"""Collateral sources: file formats, and the Intel PCS v4 / PCCS REST client against a local
HTTP server replaying responses built from the real vectors (offline, 127.0.0.1 only)."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.anchors import INTEL_SGX_ROOT_KEY_SHA256, AnchorSet
from sgx_verifier.fetch import (
    MAX_RESPONSE,
    FetchError,
    PckCa,
    PcsClient,
    items_from_bytes,
    items_from_file,
)
from sgx_verifier.service import CollateralImporter
from sgx_verifier.store import CollateralItem, CollateralKind, SqliteCollateralStore

FMSPC = bytes.fromhex("00606a000000")


def pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


@dataclass
class Replay:
    """Recorded PCS answers: (path, sorted query) -> (status, headers, body)."""

    routes: dict[tuple[str, str], tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def add(self, path: str, query: dict[str, str], body: bytes, **headers: str) -> None:
        self.routes[(path, urllib.parse.urlencode(sorted(query.items())))] = (200, headers, body)


@pytest.fixture()
def automata(real_vectors: Path) -> dict[str, bytes]:
    base = real_vectors / "automata-dcap-attestation"
    common = base / "common"
    root = pem((common / "root_ca.der").read_bytes())
    return {
        "tcb_info": (base / "sgx-v3-2025-08/tcbinfo_00606a000000.json").read_bytes(),
        "qe_identity": (base / "sgx-v3-2025-08/qe_identity.json").read_bytes(),
        "pck_crl": (base / "sgx-v3-2025-08/pck_platform_crl.der").read_bytes(),
        "root_crl": (common / "root_ca_crl.der").read_bytes(),
        "tcb_chain": pem((common / "tcb_signing_2025.der").read_bytes()) + root,
        "pck_chain": pem((common / "pck_platform_ca.der").read_bytes()) + root,
    }


@pytest.fixture()
def server(automata: dict[str, bytes]) -> Iterator[tuple[str, Replay]]:
    replay = Replay()
    quote = urllib.parse.quote
    replay.add(
        "/sgx/certification/v4/tcb",
        {"fmspc": FMSPC.hex()},
        automata["tcb_info"],
        **{"TCB-Info-Issuer-Chain": quote(automata["tcb_chain"].decode())},
    )
    replay.add(
        "/sgx/certification/v4/qe/identity",
        {},
        automata["qe_identity"],
        **{"SGX-Enclave-Identity-Issuer-Chain": quote(automata["tcb_chain"].decode())},
    )
    replay.add(
        "/sgx/certification/v4/pckcrl",
        {"ca": "platform", "encoding": "der"},
        automata["pck_crl"],
        **{"SGX-PCK-CRL-Issuer-Chain": quote(automata["pck_chain"].decode())},
    )
    replay.add("/sgx/certification/v4/rootcacrl", {}, automata["root_crl"])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            replay.requests.append((url.path, dict(self.headers.items())))
            key = (url.path, urllib.parse.urlencode(sorted(query.items())))
            status, headers, body = replay.routes.get(
                key, (404, {"Request-ID": "replay-404"}, b"")
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", replay
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_rest_fetch_matches_file_import_and_lands_in_the_store(
    server: tuple[str, Replay], automata: dict[str, bytes], tmp_path: Path
) -> None:
    url, replay = server
    client = PcsClient(url, api_key="k")
    items = client.collateral_for(FMSPC, PckCa.PLATFORM)
    assert [i.kind for i in items] == [
        CollateralKind.TCB_INFO,
        CollateralKind.ENCLAVE_IDENTITY,
        CollateralKind.CRL,
        CollateralKind.CRL,
    ]
    tcb, qe, pck, _root = items
    assert tcb.key == "SGX/00606a000000" and qe.key == "QE"
    assert tcb.issuer_chain == automata["tcb_chain"]
    assert pck.issuer_chain == automata["pck_chain"]
    assert tcb.id == items_from_bytes(automata["tcb_info"])[0].id
    assert pck.id == CollateralItem.crl(automata["pck_crl"]).id
    assert all(h.get("Ocp-Apim-Subscription-Key") == "k" for _, h in replay.requests)
    # Fetched items verify under the Intel root and land in the store under its key.
    store = SqliteCollateralStore(tmp_path / "c.sqlite")
    importer = CollateralImporter(store, AnchorSet.default())
    results = importer.import_items([(url, item) for item in items], source=url, now=0)
    assert all(r.latest for r in results)
    assert {r.key.partition("@")[2] for r in results} == {INTEL_SGX_ROOT_KEY_SHA256}
    assert store.get(tcb.id).source == url


def test_v3_chain_header_name_is_accepted(
    server: tuple[str, Replay], automata: dict[str, bytes]
) -> None:
    url, replay = server
    key = ("/sgx/certification/v4/tcb", f"fmspc={FMSPC.hex()}")
    replay.routes[key] = (
        200,
        {"SGX-TCB-Info-Issuer-Chain": urllib.parse.quote(automata["tcb_chain"].decode())},
        automata["tcb_info"],
    )
    assert PcsClient(url).tcb_info(FMSPC).issuer_chain == automata["tcb_chain"]


def test_http_errors_name_status_and_request_id(server: tuple[str, Replay]) -> None:
    url, _ = server
    with pytest.raises(FetchError, match=r"HTTP 404.*replay-404"):
        PcsClient(url).tcb_info(bytes(6))


def test_missing_or_empty_chain_header_is_refused(
    server: tuple[str, Replay], automata: dict[str, bytes]
) -> None:
    url, replay = server
    key = ("/sgx/certification/v4/qe/identity", "")
    replay.routes[key] = (200, {}, automata["qe_identity"])
    with pytest.raises(FetchError, match="SGX-Enclave-Identity-Issuer-Chain"):
        PcsClient(url).qe_identity()
    replay.routes[key] = (200, {"SGX-Enclave-Identity-Issuer-Chain": "garbage"}, b"{}")
    with pytest.raises(FetchError, match="no PEM"):
        PcsClient(url).qe_identity()


def test_a_response_for_another_question_is_refused(
    server: tuple[str, Replay], automata: dict[str, bytes], real_vectors: Path
) -> None:
    url, replay = server
    mobilecoin = real_vectors / "mobilecoin-attestation"
    other = (mobilecoin / "fmspc_00906ED50000_2023_07_12.json").read_bytes()
    key = ("/sgx/certification/v4/tcb", f"fmspc={FMSPC.hex()}")
    status, headers, _ = replay.routes[key]
    replay.routes[key] = (status, headers, other)
    with pytest.raises(FetchError, match="asked for SGX/00606a000000"):
        PcsClient(url).tcb_info(FMSPC)
    # The platform CA's CRL served for the processor CA.
    pck = replay.routes[("/sgx/certification/v4/pckcrl", "ca=platform&encoding=der")]
    replay.routes[("/sgx/certification/v4/pckcrl", "ca=processor&encoding=der")] = pck
    with pytest.raises(FetchError, match="processor CA's CRL"):
        PcsClient(url).pck_crl(PckCa.PROCESSOR)
    # A PCK CRL served as the root CA CRL.
    replay.routes[("/sgx/certification/v4/rootcacrl", "")] = (200, {}, automata["pck_crl"])
    with pytest.raises(FetchError, match="root CA's CRL"):
        PcsClient(url).root_ca_crl()


def test_garbage_and_oversized_bodies_are_refused(server: tuple[str, Replay]) -> None:
    url, replay = server
    key = ("/sgx/certification/v4/tcb", f"fmspc={FMSPC.hex()}")
    status, headers, _ = replay.routes[key]
    replay.routes[key] = (status, headers, b'{"tcbInfo": 1, "signature": "00"}')
    with pytest.raises(FetchError, match="not a TCB Info response"):
        PcsClient(url).tcb_info(FMSPC)
    replay.routes[key] = (status, headers, b" " * (MAX_RESPONSE + 1))
    with pytest.raises(FetchError, match="larger than"):
        PcsClient(url).tcb_info(FMSPC)
    replay.routes[("/sgx/certification/v4/rootcacrl", "")] = (200, {}, b"not a crl")
    with pytest.raises(FetchError, match="not a CRL"):
        PcsClient(url).root_ca_crl()


def test_unreachable_server_and_bad_urls() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match=r"GET http://127\.0\.0\.1"):
        PcsClient(f"http://127.0.0.1:{port}", timeout=2).qe_identity()
    for bad in ("file:///etc/passwd", "ftp://x", "127.0.0.1:80"):
        with pytest.raises(FetchError, match="http"):
            PcsClient(bad)
    with pytest.raises(FetchError, match="http"):
        PcsClient("http://127.0.0.1:1", root_ca_crl_url="file:///x")
    with pytest.raises(FetchError, match="6 bytes"):
        PcsClient("http://127.0.0.1:1").tcb_info(b"\x00")


def test_intel_pcs_uses_intel_root_crl_url() -> None:
    from sgx_verifier.fetch import INTEL_PCS_URL, INTEL_ROOT_CA_CRL_URL

    assert PcsClient(INTEL_PCS_URL)._root_ca_crl_url == INTEL_ROOT_CA_CRL_URL


# --- files ------------------------------------------------------------------------------------


def test_file_formats(real_vectors: Path) -> None:
    phala = items_from_file(real_vectors / "phala-dcap-qvl/sgx_quote_collateral.json")
    assert [(i.kind, i.key) for i in phala][:2] == [
        (CollateralKind.TCB_INFO, "SGX/00a067110000"),
        (CollateralKind.ENCLAVE_IDENTITY, "QE"),
    ]
    assert phala[2].issuer_chain is not None and phala[3].issuer_chain is None
    tdx = items_from_file(real_vectors / "phala-dcap-qvl/tdx_quote_collateral.json")
    assert (tdx[0].key, tdx[1].key) == ("TDX/b0c06f000000", "TD_QE")
    fortanix = real_vectors / "fortanix-rust-sgx"
    (tcb,) = items_from_file(fortanix / "pcs-2020-05/00906ea10000.tcb")
    assert tcb.key == "SGX/00906ea10000" and tcb.issuer_chain
    (qe,) = items_from_file(fortanix / "pcs-2020-05/qe3_identity.id")
    assert qe.key == "QE"
    (crl,) = items_from_file(fortanix / "pcs-2020-05/processor.crl")
    assert crl.kind is CollateralKind.CRL and crl.issuer_chain
    (body,) = items_from_file(real_vectors / "mobilecoin-attestation/qe_identity.json")
    assert body.kind is CollateralKind.ENCLAVE_IDENTITY
    (der,) = items_from_file(real_vectors / "mobilecoin-attestation/root_crl.der")
    assert der.kind is CollateralKind.CRL


@pytest.mark.parametrize(
    "data", [b"{}", b'{"tcbInfo": {}}', b"[1, 2]", b"\x00\x01garbage", b""]
)
def test_unknown_files_name_the_known_formats(data: bytes) -> None:
    with pytest.raises(MalformedStructureError):
        items_from_bytes(data, "x")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="cannot read"):
        items_from_file(tmp_path / "nope.json")


def test_redirects_are_followed_only_to_http(server: tuple[str, Replay]) -> None:
    url, replay = server
    key = ("/sgx/certification/v4/qe/identity", "")
    target = replay.routes[key]
    replay.routes[("/moved/qe", "")] = target
    replay.routes[key] = (302, {"Location": f"{url}/moved/qe"}, b"")
    assert PcsClient(url).qe_identity().key == "QE"
    replay.routes[key] = (302, {"Location": "file:///etc/passwd"}, b"")
    with pytest.raises(FetchError, match="file:///etc/passwd"):
        PcsClient(url).qe_identity()
    # urllib itself would follow ftp: redirects; the client does not.
    replay.routes[key] = (302, {"Location": "ftp://127.0.0.1/qe"}, b"")
    with pytest.raises(FetchError, match="refusing a redirect"):
        PcsClient(url).qe_identity()
