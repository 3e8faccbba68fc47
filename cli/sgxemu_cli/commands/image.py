"""Enclave image commands: ``image build``, ``keygen``, ``measure``, ``sign``, ``sigstruct show``.

Invariants: every input file is read through :func:`sgxemu_cli.io.read_input` and parsed by
``sgx_platform.arch``; unusable input (missing file, junk, wrong size, a key that is not
RSA-3072 with e=3) ends in one line on stderr and exit 64, never a traceback. Outputs are
written atomically; a signing key is written with mode 0600 and never over an existing file
unless ``--force``. ``sigstruct show`` reports an invalid SIGSTRUCT (exit 0) with the reason of
every failed check instead of refusing it; only a SIGSTRUCT that cannot be parsed is an error.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.errors import MalformedStructureError, SgxError
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.sgxs import read_sgxs, write_sgxs
from sgx_platform.arch.signing import (
    check_signing_key,
    generate_signing_key,
    mrsigner_of_public_key,
    sign_sigstruct,
    signing_attributes,
)
from sgx_platform.arch.sigstruct import Sigstruct
from sgxemu_cli.errors import EXIT_OK, UsageError
from sgxemu_cli.io import print_json, read_input, write_atomic

#: Per-kind page limit of ``image build`` (1 GiB each; the image is built in memory).
MAX_PAGES = 1 << 18
MAX_TCS = 4096
MAX_SIGSTRUCT_FILE = 1 << 16
MAX_KEY_FILE = 1 << 20


# -- argument types --------------------------------------------------------------------------


def _int_range(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be in {low}..{high}, got {value}")
        return value

    parse.__name__ = name
    return parse


def _iso_date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"date must be YYYY-MM-DD, got {text!r}") from None


def _env_int(name: str, default: int) -> int | str:
    return os.environ.get(name, str(default))


# -- helpers ---------------------------------------------------------------------------------


def _read_image(path: str) -> EnclaveImage:
    data = read_input(path, "enclave image")
    try:
        return read_sgxs(data)
    except MalformedStructureError as e:
        raise UsageError(f"{path}: not a usable SGXS enclave image: {e}") from None


def _read_sigstruct(path: str) -> Sigstruct:
    data = read_input(path, "SIGSTRUCT", max_bytes=MAX_SIGSTRUCT_FILE)
    try:
        return Sigstruct.from_bytes(data)
    except MalformedStructureError as e:
        raise UsageError(f"{path}: not a SIGSTRUCT: {e}") from None


def _read_signing_key(path: str) -> rsa.RSAPrivateKey:
    data = read_input(path, "signing key", max_bytes=MAX_KEY_FILE)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(f"{path}: the signing key is encrypted; give an unencrypted PEM") from None
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"{path}: not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = type(key).__name__.lstrip("_").replace("PrivateKey", "")
        raise UsageError(f"{path}: the signing key must be RSA-3072 with e=3, not {kind}")
    try:
        check_signing_key(key)
    except MalformedStructureError as e:
        raise UsageError(f"{path}: {e}") from None
    return key


def _attributes_json(attributes: Attributes) -> dict[str, Any]:
    names = [f.name for f in AttributeFlags if f.name and attributes.flags & f]
    return {
        "flags": f"{attributes.flags:#018x}",
        "xfrm": f"{attributes.xfrm:#018x}",
        "names": names,
    }


def _date_text(bcd: int) -> str:
    digits = f"{bcd:08x}"
    if digits.isdigit():
        return f"{digits[0:4]}-{digits[4:6]}-{digits[6:8]}"
    return f"{bcd:#010x} (not a BCD date)"


def _emit(args: argparse.Namespace, document: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print_json(document)
    else:
        sys.stdout.write("".join(f"{line}\n" for line in lines))


# -- handlers --------------------------------------------------------------------------------


def _image_build(args: argparse.Namespace) -> int:
    try:
        image = build_image(
            code_pages=args.code_pages,
            data_pages=args.data_pages,
            heap_pages=args.heap_pages,
            tcs=args.tcs,
            seed=args.seed,
        )
    except MalformedStructureError as e:
        raise UsageError(f"cannot build the image: {e}") from None
    mrenclave = measure(image)
    write_atomic(args.out, write_sgxs(image))
    measured = sum(1 for p in image.pages if p.measured)
    _emit(
        args,
        {
            "out": str(args.out),
            "mrenclave": mrenclave.hex(),
            "size": image.size,
            "ssa_frame_size": image.ssa_frame_size,
            "pages": len(image.pages),
            "measured_pages": measured,
        },
        [
            f"wrote {args.out}: {len(image.pages)} pages ({measured} measured), "
            f"enclave size {image.size:#x}",
            f"MRENCLAVE {mrenclave.hex()}",
        ],
    )
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists; refusing to overwrite a key (use --force)")
    key = generate_signing_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(out, pem, mode=0o600)
    mrsigner = mrsigner_of_public_key(key.public_key()).hex()
    _emit(
        args,
        {"out": str(out), "mrsigner": mrsigner},
        [f"wrote {out} (RSA-3072, e=3, mode 0600)", f"MRSIGNER {mrsigner}"],
    )
    return EXIT_OK


def _measure(args: argparse.Namespace) -> int:
    image = _read_image(args.image)
    mrenclave = measure(image).hex()
    if args.json:
        print_json(
            {
                "mrenclave": mrenclave,
                "size": image.size,
                "ssa_frame_size": image.ssa_frame_size,
                "pages": len(image.pages),
                "measured_pages": sum(1 for p in image.pages if p.measured),
            }
        )
    else:
        sys.stdout.write(f"{mrenclave}\n")
    return EXIT_OK


def _sign(args: argparse.Namespace) -> int:
    if not args.key:
        raise UsageError("sign needs --key KEY.pem (or SGXEMU_SIGNING_KEY)")
    image = _read_image(args.image)
    key = _read_signing_key(args.key)
    attributes, mask = signing_attributes(no_debug=args.no_debug)
    sigstruct = sign_sigstruct(
        key,
        measure(image),
        attributes=attributes,
        attribute_mask=mask,
        isvprodid=args.isvprodid,
        isvsvn=args.isvsvn,
        date=args.date,
    )
    write_atomic(args.out, sigstruct.to_bytes())
    _emit(
        args,
        {
            "out": str(args.out),
            "mrenclave": sigstruct.enclave_hash.hex(),
            "mrsigner": sigstruct.mrsigner.hex(),
            "isvprodid": sigstruct.isvprodid,
            "isvsvn": sigstruct.isvsvn,
            "debug_allowed": not args.no_debug,
        },
        [
            f"wrote {args.out}",
            f"MRENCLAVE {sigstruct.enclave_hash.hex()}",
            f"MRSIGNER  {sigstruct.mrsigner.hex()}",
        ],
    )
    return EXIT_OK


def _check(run: Callable[[], None]) -> str | None:
    try:
        run()
    except SgxError as e:
        return str(e)
    return None


def sigstruct_report(sig: Sigstruct) -> dict[str, Any]:
    """Every field of ``sig`` and the outcome of each EINIT check on it, as JSON values."""
    structure = _check(sig.verify_structure)
    signature = _check(sig.verify_signature)
    q1 = _check(sig.verify_q1)
    q2 = _check(sig.verify_q2)
    reasons = list(dict.fromkeys(r for r in (structure, signature, q1, q2) if r))
    debug_possible = bool(sig.attributes.flags & AttributeFlags.DEBUG) or not bool(
        sig.attribute_mask.flags & AttributeFlags.DEBUG
    )
    return {
        "mrenclave": sig.enclave_hash.hex(),
        "mrsigner": sig.mrsigner.hex(),
        "vendor": f"{sig.vendor:#06x}",
        "date": _date_text(sig.date),
        "swdefined": sig.swdefined,
        "exponent": sig.exponent,
        "modulus": sig.modulus.hex(),
        "signature": sig.signature.hex(),
        "miscselect": f"{sig.miscselect:#010x}",
        "miscmask": f"{sig.miscmask:#010x}",
        "cet_attributes": sig.cet_attributes,
        "cet_attributes_mask": sig.cet_attributes_mask,
        "isvfamilyid": sig.isvfamilyid.hex(),
        "attributes": _attributes_json(sig.attributes),
        "attribute_mask": _attributes_json(sig.attribute_mask),
        "enclavehash": sig.enclave_hash.hex(),
        "isvextprodid": sig.isvextprodid.hex(),
        "isvprodid": sig.isvprodid,
        "isvsvn": sig.isvsvn,
        "q1": sig.q1.hex(),
        "q2": sig.q2.hex(),
        "debug_launch_possible": debug_possible,
        "structure_valid": structure is None,
        "signature_valid": structure is None and signature is None,
        "q1_valid": q1 is None,
        "q2_valid": q2 is None,
        "valid": not reasons,
        "reasons": reasons,
    }


def _sigstruct_show(args: argparse.Namespace) -> int:
    report = sigstruct_report(_read_sigstruct(args.file))
    if args.json:
        print_json(report)
        return EXIT_OK
    short = {"modulus", "signature", "q1", "q2", "reasons"}
    lines = []
    for name, value in report.items():
        if name in short:
            continue
        if isinstance(value, dict):
            value = f"flags {value['flags']} xfrm {value['xfrm']} {' '.join(value['names'])}"
        lines.append(f"{name:22} {value}")
    lines.extend(f"invalid: {reason}" for reason in report["reasons"])
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return EXIT_OK


# -- registration ----------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``image``, ``keygen``, ``measure``, ``sign`` and ``sigstruct`` to the CLI."""
    image = subparsers.add_parser("image", help="enclave images")
    image_sub = image.add_subparsers(dest="image_command", metavar="ACTION")
    image_sub.required = True
    build = image_sub.add_parser("build", help="build a deterministic example enclave image (SGXS)")
    build.add_argument("--out", required=True, help="where to write the SGXS file")
    pages = _int_range("pages", 0, MAX_PAGES)
    build.add_argument(
        "--code-pages",
        type=pages,
        default=_env_int("SGXEMU_CODE_PAGES", 4),
        help="R+X pages of seeded content (env SGXEMU_CODE_PAGES; default 4)",
    )
    build.add_argument(
        "--data-pages",
        type=pages,
        default=_env_int("SGXEMU_DATA_PAGES", 2),
        help="R+W pages of seeded content (env SGXEMU_DATA_PAGES; default 2)",
    )
    build.add_argument(
        "--heap-pages",
        type=pages,
        default=_env_int("SGXEMU_HEAP_PAGES", 0),
        help="unmeasured zero R+W pages (env SGXEMU_HEAP_PAGES; default 0)",
    )
    build.add_argument(
        "--tcs",
        type=_int_range("tcs", 1, MAX_TCS),
        default=_env_int("SGXEMU_TCS", 1),
        help="thread control structures (env SGXEMU_TCS; default 1)",
    )
    build.add_argument(
        "--seed",
        type=_int_range("seed", 0, (1 << 64) - 1),
        default=_env_int("SGXEMU_SEED", 0),
        help="content seed (env SGXEMU_SEED; default 0)",
    )
    build.add_argument("--json", action="store_true", help="print one JSON document")
    build.set_defaults(func=_image_build)

    keygen = subparsers.add_parser("keygen", help="make an RSA-3072, e=3 enclave signing key")
    keygen.add_argument("--out", required=True, help="where to write the PKCS#8 PEM key")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing file")
    keygen.add_argument("--json", action="store_true", help="print one JSON document")
    keygen.set_defaults(func=_keygen)

    meas = subparsers.add_parser("measure", help="print the MRENCLAVE of an SGXS image")
    meas.add_argument("image", help="SGXS enclave image")
    meas.add_argument("--json", action="store_true", help="print one JSON document")
    meas.set_defaults(func=_measure)

    sign = subparsers.add_parser("sign", help="sign an SGXS image: write its SIGSTRUCT")
    sign.add_argument("image", help="SGXS enclave image")
    sign.add_argument(
        "--key",
        default=os.environ.get("SGXEMU_SIGNING_KEY"),
        help="RSA-3072 e=3 PEM private key (env SGXEMU_SIGNING_KEY)",
    )
    sign.add_argument("--out", required=True, help="where to write the 1808-byte SIGSTRUCT")
    u16 = _int_range("value", 0, 0xFFFF)
    sign.add_argument(
        "--isvprodid",
        type=u16,
        default=_env_int("SGXEMU_ISVPRODID", 0),
        help="ISVPRODID 0..65535 (env SGXEMU_ISVPRODID; default 0)",
    )
    sign.add_argument(
        "--isvsvn",
        type=u16,
        default=_env_int("SGXEMU_ISVSVN", 0),
        help="ISVSVN 0..65535 (env SGXEMU_ISVSVN; default 0)",
    )
    sign.add_argument(
        "--no-debug",
        action="store_true",
        help="forbid launching in debug mode (DEBUG masked, DEBUG=0)",
    )
    sign.add_argument(
        "--date",
        type=_iso_date,
        default=os.environ.get("SGXEMU_SIGN_DATE"),
        help="SIGSTRUCT date YYYY-MM-DD (env SGXEMU_SIGN_DATE; default today, UTC)",
    )
    sign.add_argument("--json", action="store_true", help="print one JSON document")
    sign.set_defaults(func=_sign)

    sigstruct = subparsers.add_parser("sigstruct", help="inspect SIGSTRUCTs")
    sig_sub = sigstruct.add_subparsers(dest="sigstruct_command", metavar="ACTION")
    sig_sub.required = True
    show = sig_sub.add_parser("show", help="every field, MRENCLAVE, MRSIGNER, validity")
    show.add_argument("file", help="a 1808-byte SIGSTRUCT")
    show.add_argument("--json", action="store_true", help="print one JSON document")
    show.set_defaults(func=_sigstruct_show)


__all__ = ["register", "sigstruct_report"]
