"""sgx.verifier.v1.QuoteVerificationService served for real: TLS listeners, an admin socket and
an mTLS admin listener, real channels; quotes and collateral from the emulated PCS fixture."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from sgx.quoting.v1 import provisioning_pb2 as pcs_pb
from sgx.quoting.v1 import provisioning_pb2_grpc as pcs_grpc
from sgx.verifier.v1 import verifier_pb2 as pb
from sgx.verifier.v1 import verifier_pb2_grpc as pb_grpc
from sgx_platform.arch.binding import report_data_for
from sgx_platform.arch.dcap.ecdsa import public_key_to_raw
from sgx_quoting.fixtures import Fixture, fixture
from sgx_quoting.rpc.provisioning import (
    ROLE_LOCAL,
    ProvisioningServicer,
    authorizer,
    register,
)
from sgx_quoting.rpc.provisioning import SERVICE_NAME as PCS_SERVICE
from sgx_quoting.state import PcsStore
from sgx_rpc.channel import tls_channel, unix_channel, wait_ready
from sgx_rpc.errors import error_info
from sgx_rpc.server import ServiceHost, TlsListener, UnixListener
from sgx_verifier.anchors import load_anchor
from sgx_verifier.rpc.server import VerifierServer, build_server, build_service
from sgx_verifier.service import AnchorConfig, VerifierConfig

EMULATED = "sgxemu-emulated"
ADMIN_CN = "sgxemu-admin"


# --- PKI for the service's TLS ---------------------------------------------------------------


def _cert(
    cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey]
    | None, *, ca: bool = False
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0] if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Pki:
    ca: bytes
    files: dict[str, Path]
    admin: tuple[bytes, bytes]
    other: tuple[bytes, bytes]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("verifier test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    out = {}
    for name in ("server", "admin", "other"):
        key = ec.generate_private_key(ec.SECP256R1())
        cn = {"server": "sgxemu-verifier", "admin": ADMIN_CN, "other": "someone"}[name]
        out[name] = (_pem(_cert(cn, key, issuer)), _key_pem(key))
    (d / "ca.pem").write_bytes(_pem(ca))
    (d / "server.pem").write_bytes(out["server"][0])
    (d / "server.key").write_bytes(out["server"][1])
    files = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}
    return Pki(_pem(ca), files, out["admin"], out["other"])


# --- the service under test -----------------------------------------------------------------


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    server: VerifierServer
    clock: Clock
    public: grpc.Channel
    admin: grpc.Channel
    stub: pb_grpc.QuoteVerificationServiceStub
    admin_stub: pb_grpc.QuoteVerificationServiceStub
    state: Path
    channels: list[grpc.Channel] = field(default_factory=list)

    def tls(self, address: str, pki: Pki, cert: tuple[bytes, bytes] | None = None) -> grpc.Channel:
        channel = tls_channel(
            address,
            pki.ca,
            client_certificate_pem=cert[0] if cert else None,
            client_key_pem=cert[1] if cert else None,
        )
        wait_ready(channel, 10)
        self.channels.append(channel)
        return channel


def _config(state: Path, pki: Pki, f: Fixture, **overrides: object) -> VerifierConfig:
    (state / "emulated-root.der").write_bytes(f.pki.root.der)
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "tls_certificate": pki.files["cert"],
        "tls_key": pki.files["key"],
        "client_ca": pki.files["ca"],
        "admin_socket": state / "admin.sock",
        "admin_listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "anchors": (AnchorConfig(EMULATED, state / "emulated-root.der"),),
        "challenge_ttl": 60,
        "base_dir": state,
    }
    values.update(overrides)
    return VerifierConfig(**values)  # type: ignore[arg-type]


def _serve(state: Path, pki: Pki, clock: Clock, **overrides: object) -> Served:
    config = _config(state, pki, fixture(), **overrides)
    server = build_server(config, build_service(config, clock=clock), max_workers=4)
    server.start()
    public = tls_channel(server.address_of(TlsListener), pki.ca)
    wait_ready(public, 10)
    admin = unix_channel(state / "admin.sock")
    wait_ready(admin, 10)
    return Served(
        server, clock, public, admin, pb_grpc.QuoteVerificationServiceStub(public),
        pb_grpc.QuoteVerificationServiceStub(admin), state, [public, admin],
    )


def _stop(served: Served) -> None:
    for channel in served.channels:
        channel.close()
    served.server.stop(0)


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vfy", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture()
def served(short_dir: Path, pki: Pki) -> Iterator[Served]:
    f = fixture()
    clock = Clock(f.now.timestamp() + 60)
    s = _serve(short_dir, pki, clock)
    _import_fixture_collateral(s, f)
    try:
        yield s
    finally:
        _stop(s)


def _import_fixture_collateral(s: Served, f: Fixture) -> pb.ImportCollateralResponse:
    collateral = f.pcs().collateral_for_quote(f.quote())
    return s.admin_stub.ImportCollateral(
        pb.ImportCollateralRequest(
            files=[pb.CollateralFile(name="collateral.json", content=collateral.to_json().encode())]
        ),
        timeout=10,
    )


def _quote(report_data: bytes = bytes(64), *, debug: bool = False) -> bytes:
    f = fixture()
    return f.quote(isv_report=f.isv_report(report_data=report_data, debug=debug))


def _emulated_policy(**fields: object) -> pb.Policy:
    return pb.Policy(trust_anchors=pb.StringSet(values=[EMULATED]), **fields)  # type: ignore[arg-type]


def _verify(stub: pb_grpc.QuoteVerificationServiceStub, **fields: object) -> pb.VerifyQuoteResponse:
    response: pb.VerifyQuoteResponse = stub.VerifyQuote(pb.VerifyQuoteRequest(**fields), timeout=20)  # type: ignore[arg-type]
    return response


def _codes(response: pb.VerifyQuoteResponse) -> list[tuple[str, str]]:
    return [(v.code, v.detail) for v in response.policy.violations]


def _invalid(call: object, **fields: object) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call(**fields)  # type: ignore[operator]
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    info = error_info(e.value)
    assert info is not None and info.domain == "verifier.sgxemu" and e.value.details()
    return str(info.reason)


# --- verification, default policy, health ---------------------------------------------------


def test_emulated_quote_verifies_and_the_configured_anchor_is_named(served: Served) -> None:
    response = _verify(served.stub, quote=_quote())
    assert response.verified and response.accepted, response
    assert response.tcb_status == "UpToDate"
    assert response.trust_anchor.name == EMULATED and not response.trust_anchor.production
    assert "proves nothing about real SGX hardware" in response.warning
    assert [c.name for c in response.collateral] == [
        "tcb_info", "qe_identity", "pck_crl", "root_ca_crl"
    ]
    assert response.enclave.tee == "SGX" and len(response.enclave.mrenclave) == 32
    assert response.token and response.policy.passed and len(response.policy.policy_hash) == 64


def test_health_and_reflection_over_tls(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.public).Check(
        health_pb2.HealthCheckRequest(service="sgx.verifier.v1.QuoteVerificationService"),
        timeout=5,
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    replies = reflection_pb2_grpc.ServerReflectionStub(served.public).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert "sgx.verifier.v1.QuoteVerificationService" in names


# --- the challenge flow -----------------------------------------------------------------------


def test_challenge_flow_issued_bound_used_once_expired_replayed(served: Served) -> None:
    policy = _emulated_policy(require_challenge=True)
    issued = served.stub.CreateChallenge(pb.CreateChallengeRequest(), timeout=5)
    assert len(issued.challenge) == 96
    assert issued.expires_at - issued.issued_at == 60
    user = b"session key fingerprint"
    bound = _quote(report_data_for(issued.challenge, user, b"\x01" * 32))

    # Required but absent.
    no_challenge = _verify(served.stub, quote=bound, policy=policy)
    assert no_challenge.verified and not no_challenge.accepted and not no_challenge.token
    assert _codes(no_challenge) == [("POLICY_CHALLENGE_REQUIRED", "")]
    # Wrong user data: not bound, and the challenge is not burnt by it.
    unbound = _verify(
        served.stub, quote=bound, policy=policy, challenge=issued.challenge, user_data=b"other"
    )
    assert _codes(unbound) == [("POLICY_CHALLENGE", "CHALLENGE_NOT_BOUND")]
    # Bound: accepted once.
    first = _verify(
        served.stub, quote=bound, policy=policy, challenge=issued.challenge, user_data=user
    )
    assert first.accepted and first.token, _codes(first)
    # Replayed.
    again = _verify(
        served.stub, quote=bound, policy=policy, challenge=issued.challenge, user_data=user
    )
    assert not again.accepted and not again.token
    assert _codes(again) == [("POLICY_CHALLENGE", "CHALLENGE_REPLAYED")]
    # Expired.
    late = served.stub.CreateChallenge(pb.CreateChallengeRequest(ttl_seconds=5), timeout=5)
    late_quote = _quote(report_data_for(late.challenge))
    served.clock.now += 5
    expired = _verify(served.stub, quote=late_quote, policy=policy, challenge=late.challenge)
    assert _codes(expired) == [("POLICY_CHALLENGE", "CHALLENGE_EXPIRED")]
    # Forged: one bit of the MAC flipped.
    forged = bytearray(late.challenge)
    forged[-1] ^= 1
    bad = _verify(served.stub, quote=late_quote, policy=policy, challenge=bytes(forged))
    assert _codes(bad) == [("POLICY_CHALLENGE", "CHALLENGE_BAD_MAC")]


# --- tokens -----------------------------------------------------------------------------------


def _jose(token: str, jwks_json: str, now: float, audience: str) -> dict[str, object]:
    keys = KeySet.import_key_set(json.loads(jwks_json))
    decoded = jose_jwt.decode(token, keys, algorithms=["ES256"])
    jose_jwt.JWTClaimsRegistry(
        now=int(now),
        iss={"essential": True, "value": "sgxemu-verifier"},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
    ).validate(decoded.claims)
    return dict(decoded.claims)


def test_token_verifies_against_the_jwks_with_joserfc_and_not_after_tampering(
    served: Served,
) -> None:
    quote = _quote()
    response = _verify(served.stub, quote=quote, audience="bank.example")
    jwks = served.stub.GetJwks(pb.GetJwksRequest(), timeout=5).jwks_json
    claims = _jose(response.token, jwks, served.clock.now, "bank.example")
    sgx = claims["sgx"]
    assert isinstance(sgx, dict)
    assert sgx["tcb_status"] == "UpToDate" and sgx["mrenclave"] == response.enclave.mrenclave.hex()
    assert claims["quote_sha256"] == response.quote_sha256.hex()
    assert claims["collateral"] == {c.name: c.id for c in response.collateral}
    assert claims["policy_hash"] == response.policy.policy_hash
    assert claims["trust_anchor"] == {
        "name": EMULATED, "key_sha256": response.trust_anchor.key_sha256, "production": False
    }
    assert "warning" in claims
    header, payload, signature = response.token.split(".")
    import base64

    raw = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw["sgx"]["debug"] = True
    forged_payload = base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()
    with pytest.raises(JoseError):
        _jose(f"{header}.{forged_payload}.{signature}", jwks, served.clock.now, "bank.example")
    with pytest.raises(JoseError):
        _jose(response.token, jwks, served.clock.now, "someone-else")


def test_no_token_for_a_rejected_quote(served: Served) -> None:
    response = _verify(served.stub, quote=_quote(debug=True))
    assert response.verified and not response.accepted and response.token == ""
    assert _codes(response) == [("POLICY_DEBUG_ENCLAVE", "")]


# --- policy rules over the wire ------------------------------------------------------------------


def _enclave() -> tuple[bytes, bytes]:
    r = fixture().isv_report()
    return bytes(r.mrenclave), bytes(r.mrsigner)


@pytest.mark.parametrize(
    "fields, code",
    [
        ({"mrenclave": [bytes(32)]}, "POLICY_MRENCLAVE"),
        ({"mrsigner": [bytes(32)]}, "POLICY_MRSIGNER"),
        ({"isv_prod_id": 2}, "POLICY_ISVPRODID"),
        ({"min_isv_svn": 2}, "POLICY_ISVSVN"),
        ({"expected_report_data": b"\x01" * 64}, "POLICY_REPORT_DATA"),
        ({"min_tcb_evaluation_data_number": 1000}, "POLICY_TCB_EVALUATION_NUMBER"),
        (
            {"accepted_tcb_statuses": pb.StringSet(values=["SWHardeningNeeded"])},
            "POLICY_TCB_STATUS",
        ),
    ],
)
def test_each_request_policy_rule_denies(
    served: Served, fields: dict[str, object], code: str
) -> None:
    response = _verify(served.stub, quote=_quote(), policy=_emulated_policy(**fields))
    assert response.verified and not response.accepted and not response.token
    assert [c for c, _ in _codes(response)] == [code]


def test_advisory_and_collateral_grace_rules_over_the_wire(served: Served) -> None:
    """The two request-policy rules the parametrized test above cannot reach with the fixture's
    UpToDate quote: accepted advisory IDs, and collateral grace (off by default)."""
    f = fixture()
    pcs = f.pcs()
    recovery = pcs.tcb_recovery()
    quote = f.quote()
    recovered = pcs.collateral_for_quote(quote).to_json()
    statuses = pb.StringSet(values=["UpToDate", "OutOfDate"])
    other = _verify(served.stub, quote=quote, collateral_json=recovered, policy=_emulated_policy(
        accepted_tcb_statuses=statuses, accepted_advisory_ids=pb.StringSet(values=["INTEL-SA-0"])))
    assert other.verified and list(other.advisory_ids) == [recovery.advisory_id]
    assert not other.accepted and not other.token
    assert [c for c, _ in _codes(other)] == ["POLICY_ADVISORY"]
    listed = _verify(served.stub, quote=quote, collateral_json=recovered, policy=_emulated_policy(
        accepted_tcb_statuses=statuses,
        accepted_advisory_ids=pb.StringSet(values=[recovery.advisory_id])))
    assert listed.accepted and listed.token, _codes(listed)

    # An hour past the collateral's nextUpdate: refused by default, accepted with a day's grace.
    quote = _quote()
    collateral = f.pcs().collateral_for_quote(quote)
    served.clock.now = collateral.signed_tcb_info.tcb_info.next_update.timestamp() + 3600
    stale = _verify(served.stub, quote=quote, collateral_json=collateral.to_json(),
                    policy=_emulated_policy())
    assert not stale.verified and not stale.accepted and not stale.token
    assert "COLLATERAL_EXPIRED" in [failure.code for failure in stale.failures]
    graceful = _verify(served.stub, quote=quote, collateral_json=collateral.to_json(),
                       policy=_emulated_policy(collateral_grace_seconds=86400))
    assert graceful.verified and graceful.accepted, (list(graceful.failures), _codes(graceful))
    served.clock.now += 2 * 86400  # beyond the grace
    late = _verify(served.stub, quote=quote, collateral_json=collateral.to_json(),
                   policy=_emulated_policy(collateral_grace_seconds=86400))
    assert not late.verified and not late.accepted and not late.token


def test_request_policy_defaults_are_strict(served: Served) -> None:
    mre, mrs = _enclave()
    # An empty request policy is the strict default: the Intel anchor only.
    response = _verify(served.stub, quote=_quote(), policy=pb.Policy())
    assert _codes(response) == [("POLICY_TRUST_ANCHOR", "")]
    allowed = _emulated_policy(mrenclave=[mre], mrsigner=[mrs], isv_prod_id=1, min_isv_svn=1)
    assert _verify(served.stub, quote=_quote(), policy=allowed).accepted
    lenient = _emulated_policy(allow_debug=True)
    debug = _verify(served.stub, quote=_quote(debug=True), policy=lenient)
    assert debug.accepted


def test_tcb_recovery_is_rejected_by_default_and_named(served: Served) -> None:
    f = fixture()
    pcs = f.pcs()
    pcs.tcb_recovery()
    quote = f.quote()
    collateral = pcs.collateral_for_quote(quote).to_json()
    response = _verify(served.stub, quote=quote, collateral_json=collateral)
    assert response.verified and response.tcb_status == "OutOfDate"
    assert [c for c, _ in _codes(response)] == ["POLICY_TCB_STATUS"]


def test_unverified_quote_is_an_answer_with_every_failed_check(served: Served) -> None:
    f = fixture()
    revoked = f.pcs()
    revoked.revoke_pck()
    quote = f.quote()
    response = _verify(
        served.stub, quote=quote, collateral_json=revoked.collateral_for_quote(quote).to_json()
    )
    assert not response.verified and not response.accepted and not response.token
    assert "CERT_REVOKED" in [failure.code for failure in response.failures]
    assert all(failure.hint for failure in response.failures)
    assert _codes(response)[0] == ("POLICY_NOT_VERIFIED", response.failures[0].code)


# --- bad input of every kind ----------------------------------------------------------------------


def test_bad_input_is_invalid_argument_with_a_reason(served: Served) -> None:
    verify = served.stub.VerifyQuote
    good = _quote()

    def req(**fields: object) -> dict[str, object]:
        return {"request": pb.VerifyQuoteRequest(**fields), "timeout": 10}  # type: ignore[arg-type]

    assert _invalid(verify, **req()) == "QUOTE_EMPTY"
    assert _invalid(verify, **req(quote=b"\x03\x00" + bytes(100))) == "QUOTE_MALFORMED"
    assert _invalid(verify, **req(quote=good[:-1])) == "QUOTE_MALFORMED"
    assert _invalid(verify, **req(quote=good + b"\x01")) == "QUOTE_MALFORMED"
    assert _invalid(verify, **req(quote=bytes(2 << 20))) == "QUOTE_TOO_LARGE"
    assert _invalid(verify, **req(quote=good, collateral_json="{}")) == "COLLATERAL_MALFORMED"
    assert _invalid(verify, **req(quote=good, collateral_ids=["xyz"])) == "COLLATERAL_IDS"
    assert _invalid(verify, **req(quote=good, collateral_ids=["00" * 32])) == "COLLATERAL_UNKNOWN"
    assert _invalid(verify, **req(quote=good, user_data=b"x")) == "USER_DATA_WITHOUT_CHALLENGE"
    assert _invalid(verify, **req(quote=good, challenge=b"short")) == "CHALLENGE_MALFORMED"
    assert _invalid(verify, **req(quote=good, at=-1)) == "TIME_OUT_OF_RANGE"
    bad_policies = [
        pb.Policy(accepted_tcb_statuses=pb.StringSet(values=["Revoked"])),
        pb.Policy(accepted_tcb_statuses=pb.StringSet(values=["uptodate"])),
        pb.Policy(accepted_tcb_statuses=pb.StringSet()),
        pb.Policy(mrenclave=[b"short"]),
        pb.Policy(expected_report_data=b"x"),
        pb.Policy(isv_prod_id=70000),
        pb.Policy(trust_anchors=pb.StringSet(values=["not a name"])),
        pb.Policy(require_challenge=True, expected_report_data=bytes(64)),
    ]
    for policy in bad_policies:
        assert _invalid(verify, **req(quote=good, policy=policy)) == "POLICY_INVALID", policy
    create = served.stub.CreateChallenge
    assert _invalid(create, request=pb.CreateChallengeRequest(ttl_seconds=10**6)) == "CHALLENGE_TTL"
    importer = served.admin_stub.ImportCollateral
    assert _invalid(importer, request=pb.ImportCollateralRequest()) == "NO_FILES"
    garbage = pb.ImportCollateralRequest(files=[pb.CollateralFile(name="x", content=b"garbage")])
    assert _invalid(importer, request=garbage) == "COLLATERAL_MALFORMED"
    refresh = served.admin_stub.RefreshCollateral
    assert _invalid(refresh, request=pb.RefreshCollateralRequest()) == "NO_TARGET"
    bad_fmspc = pb.RefreshCollateralRequest(fmspc=pb.FmspcTarget(fmspc=b"\x00", ca=1))
    assert _invalid(refresh, request=bad_fmspc) == "FMSPC_MALFORMED"
    junk = pb.RefreshCollateralRequest(quote=b"junk")
    assert _invalid(refresh, request=junk) == "QUOTE_MALFORMED"


def test_forged_collateral_is_refused_at_import_and_nothing_is_stored(served: Served) -> None:
    f = fixture()
    collateral = json.loads(f.pcs().collateral_for_quote(f.quote()).to_json())
    signature = bytearray(bytes.fromhex(collateral["tcb_info_signature"]))
    signature[10] ^= 1
    collateral["tcb_info_signature"] = signature.hex()
    request = pb.ImportCollateralRequest(
        files=[pb.CollateralFile(name="forged.json", content=json.dumps(collateral).encode())]
    )
    reason = _invalid(served.admin_stub.ImportCollateral, request=request)
    assert reason == "COLLATERAL_SIGNATURE_INVALID"


def test_missing_collateral_is_failed_precondition(short_dir: Path, pki: Pki) -> None:
    s = _serve(short_dir, pki, Clock(fixture().now.timestamp()))
    try:
        with pytest.raises(grpc.RpcError) as e:
            _verify(s.stub, quote=_quote())
        assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(e.value)
        assert info is not None and info.reason == "COLLATERAL_MISSING"
        assert "tcb_info" in info.metadata["missing"]
        with pytest.raises(grpc.RpcError) as no_source:
            s.admin_stub.RefreshCollateral(pb.RefreshCollateralRequest(quote=_quote()), timeout=5)
        assert no_source.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    finally:
        _stop(s)


# --- authorization ---------------------------------------------------------------------------


def test_collateral_changes_need_the_admin_role(served: Served, pki: Pki) -> None:
    f = fixture()
    content = f.pcs().collateral_for_quote(f.quote()).to_json().encode()
    request = pb.ImportCollateralRequest(files=[pb.CollateralFile(name="c", content=content)])
    with pytest.raises(grpc.RpcError) as e:
        served.stub.ImportCollateral(request, timeout=5)
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    admin_address = served.server.address_of(TlsListener)
    mtls = [a for listener, a in served.server.addresses.items()
            if isinstance(listener, TlsListener) and listener.client_ca_pem is not None]
    assert mtls and mtls[0] != admin_address
    other = pb_grpc.QuoteVerificationServiceStub(served.tls(mtls[0], pki, pki.other))
    with pytest.raises(grpc.RpcError) as e:
        other.ImportCollateral(request, timeout=5)
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert other.GetJwks(pb.GetJwksRequest(), timeout=5).jwks_json
    admin = pb_grpc.QuoteVerificationServiceStub(served.tls(mtls[0], pki, pki.admin))
    reply = admin.ImportCollateral(request, timeout=10)
    assert [i.placement for i in reply.items] == [pb.PLACEMENT_ALREADY_LATEST] * 4


# --- metrics and shutdown -----------------------------------------------------------------------


def test_metrics_count_results_and_report_collateral_age(served: Served) -> None:
    _verify(served.stub, quote=_quote())
    _verify(served.stub, quote=_quote(debug=True))
    with pytest.raises(grpc.RpcError):
        _verify(served.stub, quote=b"junk")
    address = served.server.metrics_address
    assert address is not None and address.startswith("127.0.0.1:")
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    assert 'sgxemu_verifier_verifications_total{result="accepted"} 1.0' in text
    assert 'sgxemu_verifier_verifications_total{result="rejected"} 1.0' in text
    assert 'sgxemu_verifier_verifications_total{result="invalid"} 1.0' in text
    assert "sgxemu_verifier_verification_seconds_count 3.0" in text
    # Collateral is keyed under the anchor it chains to: the emulated root's key.
    root = load_anchor(fixture().pki.root.der, EMULATED).key_sha256
    age = f'sgxemu_verifier_collateral_age_seconds{{key="SGX/00a0ee000000@{root}",kind="tcb_info"}}'
    assert f"{age} 60.0" in text
    assert "sgxemu_verifier_collateral_expiry_seconds" in text


def test_graceful_stop_removes_the_admin_socket(short_dir: Path, pki: Pki) -> None:
    s = _serve(short_dir, pki, Clock(fixture().now.timestamp()))
    assert (short_dir / "admin.sock").exists()
    _stop(s)
    assert not (short_dir / "admin.sock").exists()


# --- two replicas, one store, one key -----------------------------------------------------------


def test_two_instances_sharing_store_and_keys_accept_each_others_challenges_and_tokens(
    served: Served, pki: Pki
) -> None:
    with tempfile.TemporaryDirectory(prefix="vfy2", dir="/tmp") as other_dir:
        state = served.state
        b = _serve(
            Path(other_dir),
            pki,
            served.clock,
            collateral_db=state / "collateral.sqlite",
            replay_db=state / "replay.sqlite",
            challenge_key=state / "challenge.key",
            token_keys=state / "token-keys",
        )
        try:
            policy = _emulated_policy(require_challenge=True)
            issued = served.stub.CreateChallenge(pb.CreateChallengeRequest(), timeout=5)
            quote = _quote(report_data_for(issued.challenge))
            # B uses A's collateral (shared store) and redeems A's challenge.
            at_b = _verify(b.stub, quote=quote, policy=policy, challenge=issued.challenge)
            assert at_b.accepted, _codes(at_b)
            # A refuses the replay: one replay store.
            at_a = _verify(served.stub, quote=quote, policy=policy, challenge=issued.challenge)
            assert _codes(at_a) == [("POLICY_CHALLENGE", "CHALLENGE_REPLAYED")]
            # B's token verifies against A's JWKS, A's against B's.
            jwks_a = served.stub.GetJwks(pb.GetJwksRequest(), timeout=5).jwks_json
            jwks_b = b.stub.GetJwks(pb.GetJwksRequest(), timeout=5).jwks_json
            assert jwks_a == jwks_b
            token_a = _verify(served.stub, quote=_quote()).token
            _jose(at_b.token, jwks_a, served.clock.now, "sgxemu")
            _jose(token_a, jwks_b, served.clock.now, "sgxemu")
        finally:
            _stop(b)


# --- as-of re-verification and refresh ------------------------------------------------------------


def test_reverification_with_the_token_collateral_ids(served: Served) -> None:
    first = _verify(served.stub, quote=_quote())
    ids = [c.id for c in first.collateral]
    served.clock.now += 10 * 86400
    again = _verify(served.stub, quote=_quote(), collateral_ids=ids, at=first.at)
    assert again.accepted and [c.id for c in again.collateral] == ids and again.at == first.at
    # An as-of answer about a past time never carries a token.
    assert first.token and again.token == ""


@pytest.fixture()
def pcs_socket(short_dir: Path) -> Iterator[Path]:
    f = fixture()
    store = PcsStore(short_dir / "pcs")
    store.create(f.pki, f.state())
    host = ServiceHost(
        authorizer(), [register(ProvisioningServicer(store, system_clock=f.clock))], [PCS_SERVICE]
    )
    path = short_dir / "pcs.sock"
    host.add(UnixListener(path, 0o600, ROLE_LOCAL))
    host.start()
    channel = unix_channel(path)
    try:
        wait_ready(channel, 10)
        pcs_grpc.ProvisioningServiceStub(channel).RegisterPck(
            pcs_pb.RegisterPckRequest(
                pck_public_key=public_key_to_raw(f.pck_key.public_key()),
                cpu_svn=f.tcb.cpusvn,
                pce_svn=f.tcb.pcesvn,
                pce_id=f.platform.pce_id,
            ),
            timeout=10,
        )
        yield path
    finally:
        channel.close()
        host.stop(0)


def test_refresh_from_the_emulated_pcs_over_grpc(pcs_socket: Path, pki: Pki) -> None:
    with tempfile.TemporaryDirectory(prefix="vfy3", dir="/tmp") as d:
        clock = Clock(fixture().now.timestamp() + 60)
        s = _serve(Path(d), pki, clock, pcs_grpc=f"unix:{pcs_socket}")
        try:
            reply = s.admin_stub.RefreshCollateral(
                pb.RefreshCollateralRequest(quote=_quote()), timeout=20
            )
            assert reply.source == f"unix:{pcs_socket}"
            assert [i.kind for i in reply.items] == ["tcb_info", "enclave_identity", "crl", "crl"]
            assert all(i.placement == pb.PLACEMENT_BECAME_LATEST for i in reply.items)
            assert _verify(s.stub, quote=_quote()).accepted
            by_fmspc = s.admin_stub.RefreshCollateral(
                pb.RefreshCollateralRequest(
                    fmspc=pb.FmspcTarget(fmspc=fixture().platform.fmspc, ca=pb.PCK_CA_PROCESSOR)
                ),
                timeout=20,
            )
            assert all(i.placement == pb.PLACEMENT_ALREADY_LATEST for i in by_fmspc.items)
        finally:
            _stop(s)
