"""``sgxemu verify``: appraise a DCAP quote locally and apply the default relying-party policy.

::

    sgxemu verify Q.bin [--collateral C.json] [--tcb-info F] [--qe-identity F] [--pck-crl F]
                  [--root-crl F] [--tcb-chain PEM] [--pck-chain PEM] [--root-ca ROOT]...
                  [--at UNIX_SECONDS] [--policy FILE] [--remote ADDR [--ca PEM]] [--json]

Collateral comes as dcap-qvl's QuoteCollateralV3 JSON (``--collateral``, what ``sgxemu pcs
collateral`` writes), or piece by piece as the Intel PCS serves it: ``--tcb-info`` and
``--qe-identity`` take a PCS response body (``{"tcbInfo"|"enclaveIdentity": ..., "signature":
...}``) or a Fortanix ``.tcb``/``.id`` wrapper, ``--pck-crl``/``--root-crl`` a CRL in DER, PEM or
hex (or Fortanix's ``{"crl", "ca_chain"}``), ``--tcb-chain`` the TCB signing certificate chain the
PCS sends in its ``SGX-TCB-Info-Issuer-Chain`` header (used for both signed documents unless a
wrapper carries its own). Pieces override the same pieces of ``--collateral``.

Trust: by default only the real Intel SGX Root CA. ``--root-ca`` (repeatable) replaces it with
the given roots (DER or PEM), named after their files; the default policy then accepts those
anchors, and a verdict under a non-Intel key carries a warning.

Policy: the default (UpToDate only, no debug enclave, the configured anchors), or a policy file
(``--policy``, TOML, env ``SGXEMU_POLICY``) applied as written. ``--remote ADDR`` sends the quote
(and ``--collateral``, ``--pck-chain``, ``--at``, ``--policy``) to a verification service
instead of appraising locally; without ``--collateral`` the service uses its own store.

Exit codes (DESIGN.md): 0 verified and accepted by the policy (UpToDate only, no debug
enclave), 1 verified but rejected by the policy, 2 not verified, 64 unusable input (unreadable
files, a quote that is not a DCAP quote, unreadable collateral, no collateral at all). Every
exit other than 0 also prints one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from sgx_platform.arch.dcap.qe_identity import ENCLAVE_IDENTITY_FIELD
from sgx_platform.arch.dcap.tcb_info import TCB_INFO_FIELD, TcbInfo
from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.anchors import AnchorSet, TrustAnchor, load_anchor
from sgx_verifier.appraisal import appraise
from sgx_verifier.collateral import (
    Collateral,
    read_certificates,
    read_crl,
    read_signed_item,
)
from sgx_verifier.errors import AnchorError, CollateralInputError
from sgx_verifier.policy import DEFAULT_POLICY, Policy, PolicyFacts
from sgx_verifier.verdict import FailureCode, Verdict
from sgxemu_cli.commands.verifier import add_verify_options, load_policy, verify_remote
from sgxemu_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from sgxemu_cli.io import print_json, read_input

EXIT_NOT_VERIFIED = 2
MAX_QUOTE = 1 << 20
MAX_COLLATERAL = 1 << 24

#: Failures that mean the quote itself is not a usable DCAP quote (exit 64).
_UNUSABLE_QUOTE = frozenset(
    {
        FailureCode.QUOTE_MALFORMED,
        FailureCode.QUOTE_VERSION_UNSUPPORTED,
        FailureCode.QUOTE_KEY_TYPE_UNSUPPORTED,
        FailureCode.QUOTE_TEE_UNSUPPORTED,
    }
)
_HEX = re.compile(rb"[0-9A-Fa-f]+")


def _unix_seconds(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at must be Unix seconds, got {text!r}") from None
    if not 0 <= value < 1 << 40:
        raise argparse.ArgumentTypeError(f"--at out of range: {value}")
    return value


def _read_quote(path: str) -> bytes:
    data = read_input(path, "quote", max_bytes=MAX_QUOTE)
    stripped = data.strip()
    if stripped and len(stripped) % 2 == 0 and _HEX.fullmatch(stripped):
        return bytes.fromhex(stripped.decode())
    return data


def _anchor_name(path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(path).stem).strip("-._")
    return (stem or "custom-root")[:64]


def _anchors(paths: list[str] | None) -> AnchorSet | None:
    if not paths:
        return None
    anchors: list[TrustAnchor] = []
    for path in paths:
        data = read_input(path, "root CA certificate", max_bytes=1 << 16)
        try:
            anchors.append(load_anchor(data, _anchor_name(path)))
        except AnchorError as e:
            raise UsageError(f"--root-ca {path!r}: {e}") from None
    try:
        return AnchorSet.of(anchors)
    except AnchorError as e:
        raise UsageError(f"--root-ca: {e}") from None


def _collateral(args: argparse.Namespace) -> Collateral:
    pieces = (args.tcb_info, args.qe_identity, args.pck_crl, args.root_crl)
    if args.collateral is None and not any(pieces):
        raise UsageError(
            "no collateral: give --collateral C.json (sgxemu pcs collateral writes one) or the "
            "PCS pieces --tcb-info, --qe-identity, --pck-crl, --root-crl, --tcb-chain"
        )
    try:
        base = Collateral()
        if args.collateral is not None:
            base = Collateral.from_json(
                read_input(args.collateral, "collateral", max_bytes=MAX_COLLATERAL)
            )
        chain = b""
        if args.tcb_chain is not None:
            chain = read_certificates(
                read_input(args.tcb_chain, "TCB signing chain"), "--tcb-chain"
            )
        tcb_info = qe_identity = None
        if args.tcb_info is not None:
            tcb_info = read_signed_item(
                read_input(args.tcb_info, "TCB Info", max_bytes=MAX_COLLATERAL),
                TCB_INFO_FIELD,
                chain,
            )
        if args.qe_identity is not None:
            qe_identity = read_signed_item(
                read_input(args.qe_identity, "QE Identity", max_bytes=MAX_COLLATERAL),
                ENCLAVE_IDENTITY_FIELD,
                chain,
            )
        pck_crl = pck_crl_chain = root_crl = None
        if args.pck_crl is not None:
            pck_crl, pck_crl_chain = read_crl(read_input(args.pck_crl, "PCK CRL"), "--pck-crl")
        if args.root_crl is not None:
            root_crl, _ = read_crl(read_input(args.root_crl, "root CA CRL"), "--root-crl")
    except CollateralInputError as e:
        raise UsageError(str(e)) from None
    return base.with_overrides(
        tcb_info=tcb_info,
        qe_identity=qe_identity,
        pck_crl=pck_crl,
        root_ca_crl=root_crl,
        pck_crl_issuer_chain=pck_crl_chain,
    )


def _summary(verdict: Verdict, passed: bool, violations: list[str]) -> list[str]:
    lines = []
    enclave = verdict.enclave
    if verdict.verified:
        lines.append(f"verified: yes (trust anchor {verdict.trust_anchor.name})"
                     if verdict.trust_anchor else "verified: yes")  # fmt: skip
        lines.append(
            f"TCB status: {verdict.tcb_status} (platform {verdict.platform_tcb_status}, "
            f"QE {verdict.qe_tcb_status})"
        )
        lines.append(f"advisories: {', '.join(verdict.advisory_ids) or 'none'}")
    else:
        lines.append("verified: NO")
        for failure in verdict.failures:
            lines.append(f"  {failure.check} {failure.code}: {failure.message}")
            lines.append(f"    hint: {failure.hint}")
    if enclave is not None:
        if enclave.tee == "SGX":
            lines.append(f"MRENCLAVE: {enclave.mrenclave.hex()}")
            lines.append(f"MRSIGNER:  {enclave.mrsigner.hex()}")
            lines.append(
                f"ISVPRODID {enclave.isv_prod_id}, ISVSVN {enclave.isv_svn}, "
                f"debug {'yes' if enclave.debug else 'no'}"
            )
        else:
            lines.append(f"MRTD: {enclave.mr_td.hex()}, debug {'yes' if enclave.debug else 'no'}")
    doc_warning = verdict.to_dict().get("warning")
    if doc_warning:
        lines.append(f"WARNING: {doc_warning}")
    lines.append(f"policy: {'accepted' if passed else 'REJECTED'}")
    lines.extend(f"  {v}" for v in violations)
    return lines


def _pck_chain(args: argparse.Namespace) -> bytes | None:
    if args.pck_chain is None:
        return None
    try:
        return read_certificates(read_input(args.pck_chain, "PCK chain"), "--pck-chain")
    except CollateralInputError as e:
        raise UsageError(str(e)) from None


def _remote(args: argparse.Namespace, quote: bytes) -> int:
    if any((args.tcb_info, args.qe_identity, args.pck_crl, args.root_crl, args.tcb_chain)):
        raise UsageError("--remote takes --collateral C.json (or none: the service's store)")
    if args.root_ca:
        raise UsageError("--remote: the service's configuration names its trust anchors")
    collateral_json = None
    if args.collateral is not None:
        data = read_input(args.collateral, "collateral", max_bytes=MAX_COLLATERAL)
        try:
            collateral_json = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"collateral {args.collateral!r} is not UTF-8 JSON") from None
    return verify_remote(
        args, quote, collateral_json=collateral_json, pck_chain=_pck_chain(args), at=args.at
    )


def _facts(collateral: Collateral) -> PolicyFacts:
    """What the policy needs beyond the verdict: here, the TCB Info's evaluation number
    (a local verification has no challenge)."""
    number = None
    if collateral.tcb_info is not None:
        try:
            number = TcbInfo.from_json(collateral.tcb_info.text).tcb_evaluation_data_number
        except MalformedStructureError:
            number = None  # the appraisal reports the unreadable TCB Info itself
    return PolicyFacts(tcb_evaluation_data_number=number)


def _verify(args: argparse.Namespace) -> int:
    quote = _read_quote(args.quote)
    if args.remote:
        return _remote(args, quote)
    collateral = _collateral(args)
    pck_chain = _pck_chain(args)
    anchors = _anchors(args.root_ca)
    policy: Policy = DEFAULT_POLICY
    if args.policy:
        policy = load_policy(args.policy)
    elif anchors is not None:
        policy = DEFAULT_POLICY.with_anchors(a.name for a in anchors)
    at = args.at if args.at is not None else int(time.time())
    verdict = appraise(quote, collateral, anchors=anchors, at=at, pck_chain=pck_chain)
    result = policy.evaluate(verdict, _facts(collateral))

    if args.json:
        document: dict[str, Any] = verdict.to_dict()
        document["policy"] = result.to_dict()
        print_json(document)
    else:
        violations = [f"{v.code}: {v.message}" for v in result.violations]
        sys.stdout.write("\n".join(_summary(verdict, result.passed, violations)) + "\n")

    error = verdict.error
    if error is not None and error.code in _UNUSABLE_QUOTE:
        sys.stderr.write(f"sgxemu: {args.quote}: not a usable DCAP quote: {error.message}\n")
        return EXIT_USAGE
    if not verdict.verified:
        assert error is not None
        sys.stderr.write(f"sgxemu: quote not verified: {error.check} {error.code}: "
                         f"{error.message}\n")  # fmt: skip
        return EXIT_NOT_VERIFIED
    if not result.passed:
        first = result.violations[0]
        sys.stderr.write(f"sgxemu: quote verified but rejected by the policy: {first.code}: "
                         f"{first.message}\n")  # fmt: skip
        return EXIT_FAILURE
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``verify`` to the ``sgxemu`` command."""
    p = subparsers.add_parser(
        "verify",
        help="appraise a DCAP quote (SGX or TDX) against collateral and trust anchors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("quote", metavar="Q.bin", help="the quote (raw bytes or hex)")
    p.add_argument(
        "--collateral",
        metavar="C.json",
        default=os.environ.get("SGXEMU_COLLATERAL"),
        help="QuoteCollateralV3 JSON (env SGXEMU_COLLATERAL)",
    )
    p.add_argument("--tcb-info", metavar="FILE", help="PCS TCB Info body or Fortanix .tcb")
    p.add_argument("--qe-identity", metavar="FILE", help="PCS QE Identity body or Fortanix .id")
    p.add_argument("--pck-crl", metavar="FILE", help="PCK CA CRL (DER, PEM, hex)")
    p.add_argument("--root-crl", metavar="FILE", help="root CA CRL (DER, PEM, hex)")
    p.add_argument("--tcb-chain", metavar="PEM", help="TCB signing certificate chain")
    p.add_argument(
        "--pck-chain",
        metavar="PEM",
        help="PCK certificate chain for quotes whose certification data (types 1-4) lacks it",
    )
    p.add_argument(
        "--root-ca",
        metavar="ROOT",
        action="append",
        default=None,
        help="trust this root CA instead of the Intel SGX Root CA (repeatable)",
    )
    p.add_argument(
        "--at",
        metavar="UNIX_SECONDS",
        type=_unix_seconds,
        default=None,
        help="verify as of this time (default: now)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    add_verify_options(p)
    p.set_defaults(func=_verify)


__all__ = ["EXIT_NOT_VERIFIED", "register"]
