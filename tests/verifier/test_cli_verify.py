"""``sgxemu verify``: the JSON fields and exit codes of DESIGN.md, on real vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sgxemu_cli.main as cli_main

DESIGN_FIELDS = (
    "verified",
    "tcb_status",
    "platform_tcb_status",
    "qe_tcb_status",
    "advisory_ids",
    "quote_version",
    "mrenclave",
    "mrsigner",
    "isv_prod_id",
    "isv_svn",
    "debug",
    "report_data",
    "fmspc",
    "trust_anchor",
    "collateral",
    "policy",
)


@pytest.fixture
def sgxemu(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``sgxemu`` in-process; return (code, out, err)."""
    monkeypatch.delenv("SGXEMU_COLLATERAL", raising=False)

    def run(*argv: str | Path) -> tuple[int, str, str]:
        try:
            code = cli_main.main([str(a) for a in argv])
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_verified_but_rejected_by_the_default_policy_exits_1(sgxemu, real_vectors: Path) -> None:  # type: ignore[no-untyped-def]
    folder = real_vectors / "phala-dcap-qvl"
    code, out, err = sgxemu(
        "verify",
        folder / "sgx_quote",
        "--collateral",
        folder / "sgx_quote_collateral.json",
        "--at",
        "1752919277",
        "--json",
    )
    assert code == 1, err
    doc = json.loads(out)
    for key in DESIGN_FIELDS:
        assert key in doc, key
    assert doc["verified"] is True
    assert doc["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert doc["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert doc["trust_anchor"] == "intel-sgx-root-ca"
    assert doc["policy"]["passed"] is False
    assert doc["policy"]["violations"][0]["code"] == "POLICY_TCB_STATUS"
    assert "error" not in doc
    assert err.count("\n") == 1 and "rejected by the policy" in err


def test_up_to_date_quote_exits_0(sgxemu, real_vectors: Path) -> None:  # type: ignore[no-untyped-def]
    folder = real_vectors / "phala-dcap-qvl"
    code, out, err = sgxemu(
        "verify",
        folder / "tdx_quote",
        "--collateral",
        folder / "tdx_quote_collateral.json",
        "--at",
        "1752919234",
        "--json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["verified"] and doc["tcb_status"] == "UpToDate" and doc["policy"]["passed"]
    assert doc["tee"] == "TDX" and doc["quote_version"] == 4
    assert err == ""


def test_not_verified_exits_2_with_the_check_named(sgxemu, real_vectors: Path) -> None:  # type: ignore[no-untyped-def]
    folder = real_vectors / "mobilecoin-attestation"
    code, out, err = sgxemu(
        "verify",
        folder / "hw_quote.dat",
        "--tcb-info",
        folder / "fmspc_00906ED50000_2023_07_12.json",
        "--qe-identity",
        folder / "qe_identity.json",
        "--pck-crl",
        folder / "processor_crl.der",
        "--root-crl",
        folder / "root_crl.der",
        "--tcb-chain",
        folder / "tcb_signer.pem",
        "--at",
        "1689195000",
        "--json",
    )
    assert code == 2, err
    doc = json.loads(out)
    assert doc["verified"] is False and doc["tcb_status"] is None
    assert doc["error"]["check"] == "crl.pck"
    assert doc["error"]["code"] == "CRL_EXPIRED"
    assert doc["error"]["hint"]
    assert doc["policy"]["violations"][0]["code"] == "POLICY_NOT_VERIFIED"
    assert "crl.pck CRL_EXPIRED" in err


def test_human_output(sgxemu, real_vectors: Path) -> None:  # type: ignore[no-untyped-def]
    folder = real_vectors / "phala-dcap-qvl"
    code, out, _err = sgxemu(
        "verify",
        folder / "sgx_quote",
        "--collateral",
        folder / "sgx_quote_collateral.json",
        "--at",
        "1752919277",
    )
    assert code == 1
    assert "verified: yes" in out
    assert "ConfigurationAndSWHardeningNeeded" in out
    assert "policy: REJECTED" in out


def test_own_root_ca_for_the_synthetic_sample(sgxemu, real_vectors: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = real_vectors / "intel-dcap-sampledata-synthetic" / "sgx"
    chain = tmp_path / "pck.pem"
    chain.write_bytes(
        (folder / "pckCert.pem").read_bytes() + (folder / "pckSignChain.pem").read_bytes()
    )
    common = [
        "verify",
        folder / "quote.dat",
        "--tcb-info",
        folder / "tcbInfo.json",
        "--qe-identity",
        folder / "qeIdentity.json",
        "--tcb-chain",
        folder / "tcbSignChain.pem",
        "--pck-crl",
        folder / "intermediateCaCrl.der",
        "--root-crl",
        folder / "rootCaCrl.der",
        "--pck-chain",
        chain,
        "--at",
        "1600000000",
        "--json",
    ]
    code, out, err = sgxemu(*common)
    assert code == 2, err
    assert json.loads(out)["error"]["check"] == "pck.chain"
    code, out, err = sgxemu(*common, "--root-ca", folder / "trustedRootCaCert.pem")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["verified"] and doc["trust_anchor"] == "trustedRootCaCert"
    assert "test anchor" in doc["warning"]


@pytest.mark.parametrize(
    "problem",
    ["no-collateral", "junk-quote", "bad-collateral", "bad-root", "missing-file", "bad-at"],
)
def test_unusable_input_exits_64(sgxemu, real_vectors: Path, tmp_path: Path, problem: str) -> None:  # type: ignore[no-untyped-def]
    folder = real_vectors / "phala-dcap-qvl"
    quote, collateral = folder / "sgx_quote", folder / "sgx_quote_collateral.json"
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x03\x00\x02\x00" + bytes(40))
    args: list[str | Path] = ["verify", quote, "--collateral", collateral, "--at", "1752919277"]
    if problem == "no-collateral":
        args = ["verify", quote]
    elif problem == "junk-quote":
        args[1] = junk
    elif problem == "bad-collateral":
        args[3] = junk
    elif problem == "bad-root":
        args += ["--root-ca", junk]
    elif problem == "missing-file":
        args[1] = tmp_path / "nope"
    elif problem == "bad-at":
        args[5] = "yesterday"
    code, _out, err = sgxemu(*args)
    assert code == 64
    assert err.strip() and "Traceback" not in err


def test_policy_file_is_applied_as_written(sgxemu, real_vectors: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = real_vectors / "phala-dcap-qvl"
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = 1\naccepted_statuses = ["UpToDate", "ConfigurationAndSWHardeningNeeded"]\n'
    )
    args = [
        "verify",
        folder / "sgx_quote",
        "--collateral",
        folder / "sgx_quote_collateral.json",
        "--at",
        "1752919277",
        "--json",
    ]
    code, out, err = sgxemu(*args, "--policy", policy)
    assert code == 0, err
    assert json.loads(out)["policy"]["passed"] is True
    policy.write_text('version = 1\naccepted_statuses = ["Revoked"]\n')
    code, _out, err = sgxemu(*args, "--policy", policy)
    assert code == 64 and "Revoked" in err


def test_remote_refuses_local_only_options(sgxemu, real_vectors: Path) -> None:  # type: ignore[no-untyped-def]
    folder = real_vectors / "mobilecoin-attestation"
    code, _out, err = sgxemu(
        "verify",
        folder / "hw_quote.dat",
        "--remote",
        "127.0.0.1:9",
        "--tcb-info",
        folder / "fmspc_00906ED50000_2023_07_12.json",
    )
    assert code == 64 and "--remote" in err


@pytest.mark.parametrize(("minimum", "expected_code"), [(17, 0), (18, 1)])
def test_a_local_policy_file_sees_the_tcb_evaluation_number(  # type: ignore[no-untyped-def]
    sgxemu, real_vectors: Path, tmp_path: Path, minimum: int, expected_code: int
) -> None:
    folder = real_vectors / "phala-dcap-qvl"  # TCB Info with tcbEvaluationDataNumber 17
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'accepted_statuses = ["ConfigurationAndSWHardeningNeeded"]\n'
        'accepted_advisory_ids = ["INTEL-SA-00289", "INTEL-SA-00615"]\n'
        f"min_tcb_evaluation_data_number = {minimum}\n"
    )
    code, out, err = sgxemu(
        "verify", folder / "sgx_quote", "--collateral", folder / "sgx_quote_collateral.json",
        "--at", "1752919277", "--policy", policy, "--json",
    )
    assert code == expected_code, err
    violations = json.loads(out)["policy"]["violations"]
    assert [v["code"] for v in violations] == ([] if expected_code == 0 else
                                                ["POLICY_TCB_EVALUATION_NUMBER"])
