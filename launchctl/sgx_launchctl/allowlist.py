"""The launch allowlist: which enclave signers may launch, under which constraints.

An entry names an MRSIGNER (SHA-256 of the signer's little-endian RSA modulus, exactly what
EINIT computes) and constrains what that signer's enclaves may ask for: DEBUG (default no),
PROVISIONKEY (default no), a set of ISVPRODIDs (default any) and a minimum ISVSVN (default 0).

Invariants:

* :func:`decide` is a pure function of the allowlist and the launch request: the same inputs
  always give the same decision, and it is the only place a launch is judged.
* Rules are checked in a fixed order (EINITTOKEN_KEY, signer, debug, PROVISIONKEY, ISVPRODID,
  ISVSVN), so a request that breaks several always names the same rule.
* A denial names its rule, a stable reason code, the MRSIGNER in hex, and the one admin command
  that would admit exactly this launch (an ``add-signer`` replacing the entry with one that
  keeps its other constraints), or says that no command can (EINITTOKEN_KEY).
* The request is judged on what EINIT will commit: MRSIGNER from the SIGSTRUCT's modulus,
  ISVPRODID and ISVSVN from the SIGSTRUCT, DEBUG and PROVISIONKEY from the SECS ATTRIBUTES.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_launchctl.errors import InvalidRequestError
from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.signing import mrsigner_of_public_key
from sgx_platform.arch.sigstruct import Sigstruct

#: Longest comment an entry keeps (characters).
MAX_COMMENT = 200
#: Most ISVPRODIDs one entry lists.
MAX_ISVPRODIDS = 64
U16_MAX = 0xFFFF


# -- MRSIGNER from what an admin has at hand --------------------------------------------------


def mrsigner_from_hex(text: str) -> Measurement:
    """An MRSIGNER given as 64 hex digits."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise InvalidRequestError(f"{text!r} is not hex; an MRSIGNER is 64 hex digits") from None
    if len(raw) != 32:
        raise InvalidRequestError(
            f"an MRSIGNER is 32 bytes (64 hex digits), got {len(raw)} bytes"
        )
    return Measurement(raw)


def mrsigner_from_key_pem(data: bytes) -> Measurement:
    """The MRSIGNER of enclaves signed by the RSA-3072, e=3 key in ``data`` (PEM, public or
    private; a private key is used only for its public half)."""
    key: Any
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidRequestError(
                "not a PEM RSA key (public, or unencrypted private)"
            ) from None
    if not isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        raise InvalidRequestError("not an RSA key; enclave signing keys are RSA-3072 with e=3")
    try:
        return mrsigner_of_public_key(key)
    except MalformedStructureError as e:
        raise InvalidRequestError(str(e)) from None


def mrsigner_from_sigstruct(data: bytes) -> Measurement:
    """The MRSIGNER a SIGSTRUCT names (SHA-256 of its MODULUS as stored)."""
    try:
        return Sigstruct.from_bytes(bytes(data)).mrsigner
    except MalformedStructureError as e:
        raise InvalidRequestError(f"not a SIGSTRUCT: {e}") from None


# -- entries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignerEntry:
    """One allowed signer and the constraints on its enclaves."""

    mrsigner: Measurement
    allow_debug: bool = False
    allow_provision_key: bool = False
    #: ISVPRODIDs the signer's enclaves may have; ``None``: any.
    isvprodids: frozenset[int] | None = None
    #: Lowest ISVSVN admitted (0: any).
    min_isvsvn: int = 0
    comment: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.mrsigner, Measurement):
            raise InvalidRequestError("an entry's MRSIGNER must be a Measurement")
        for name in ("allow_debug", "allow_provision_key"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequestError(f"{name} must be a boolean")
        if self.isvprodids is not None:
            ids = frozenset(self.isvprodids)
            if not ids:
                raise InvalidRequestError("an ISVPRODID set must not be empty (omit it for any)")
            if len(ids) > MAX_ISVPRODIDS:
                raise InvalidRequestError(f"at most {MAX_ISVPRODIDS} ISVPRODIDs per entry")
            for value in ids:
                _u16(value, "ISVPRODID")
            object.__setattr__(self, "isvprodids", ids)
        _u16(self.min_isvsvn, "minimum ISVSVN")
        if not isinstance(self.comment, str) or len(self.comment) > MAX_COMMENT:
            raise InvalidRequestError(f"a comment is text of at most {MAX_COMMENT} characters")
        if any(not ch.isprintable() for ch in self.comment):
            raise InvalidRequestError("a comment must be printable text (no control characters)")

    def canonical(self) -> dict[str, Any]:
        """A JSON-friendly form with a fixed key order (hashed into the policy digest)."""
        return {
            "mrsigner": self.mrsigner.hex(),
            "allow_debug": self.allow_debug,
            "allow_provision_key": self.allow_provision_key,
            "isvprodids": None if self.isvprodids is None else sorted(self.isvprodids),
            "min_isvsvn": self.min_isvsvn,
            "comment": self.comment,
        }

    @classmethod
    def from_canonical(cls, data: dict[str, Any]) -> SignerEntry:
        ids = data.get("isvprodids")
        return cls(
            mrsigner=mrsigner_from_hex(str(data["mrsigner"])),
            allow_debug=bool(data.get("allow_debug", False)),
            allow_provision_key=bool(data.get("allow_provision_key", False)),
            isvprodids=None if ids is None else frozenset(int(i) for i in ids),
            min_isvsvn=int(data.get("min_isvsvn", 0)),
            comment=str(data.get("comment", "")),
        )

    def add_command(self) -> str:
        """The ``sgxemu launchctl add-signer`` command that creates exactly this entry."""
        words = ["sgxemu", "launchctl", "add-signer", self.mrsigner.hex()]
        if self.allow_debug:
            words.append("--allow-debug")
        if self.allow_provision_key:
            words.append("--allow-provision-key")
        for value in sorted(self.isvprodids or ()):
            words += ["--isvprodid", str(value)]
        if self.min_isvsvn:
            words += ["--min-isvsvn", str(self.min_isvsvn)]
        if self.comment:
            words += ["--comment", self.comment]
        return shlex.join(words)


def _u16(value: object, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U16_MAX:
        raise InvalidRequestError(f"{what} must be an integer in 0..{U16_MAX}, got {value!r}")


@dataclass(frozen=True)
class Allowlist:
    """The entries, at most one per MRSIGNER, kept sorted by MRSIGNER."""

    entries: tuple[SignerEntry, ...] = ()
    _index: dict[bytes, SignerEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.entries, key=lambda e: e.mrsigner.value))
        index = {e.mrsigner.value: e for e in ordered}
        if len(index) != len(ordered):
            raise InvalidRequestError("an MRSIGNER is listed twice")
        object.__setattr__(self, "entries", ordered)
        object.__setattr__(self, "_index", index)

    @classmethod
    def of(cls, entries: Iterable[SignerEntry]) -> Allowlist:
        return cls(tuple(entries))

    def get(self, mrsigner: Measurement) -> SignerEntry | None:
        return self._index.get(mrsigner.value)

    def with_entry(self, entry: SignerEntry) -> Allowlist:
        """Add ``entry``, replacing any entry of the same MRSIGNER."""
        others = [e for e in self.entries if e.mrsigner != entry.mrsigner]
        return Allowlist((*others, entry))

    def without(self, mrsigner: Measurement) -> Allowlist:
        return Allowlist(tuple(e for e in self.entries if e.mrsigner != mrsigner))

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[SignerEntry]:
        return iter(self.entries)

    def __contains__(self, mrsigner: object) -> bool:
        return isinstance(mrsigner, Measurement) and mrsigner.value in self._index

    def canonical(self) -> list[dict[str, Any]]:
        return [e.canonical() for e in self.entries]


# -- the request and the decision -------------------------------------------------------------


@dataclass(frozen=True)
class LaunchRequest:
    """What EINIT will commit for this launch, taken from the exact SIGSTRUCT and SECS."""

    mrsigner: Measurement
    mrenclave: Measurement
    attributes: Attributes
    miscselect: int
    isvprodid: int
    isvsvn: int

    @classmethod
    def from_bytes(cls, sigstruct: bytes, secs: bytes) -> LaunchRequest:
        """Parse strictly; a malformed structure is :class:`InvalidRequestError`."""
        try:
            sig = Sigstruct.from_bytes(bytes(sigstruct))
        except MalformedStructureError as e:
            raise InvalidRequestError(f"malformed SIGSTRUCT: {e}") from None
        try:
            control = Secs.from_bytes(bytes(secs))
        except MalformedStructureError as e:
            raise InvalidRequestError(f"malformed SECS: {e}") from None
        return cls(
            mrsigner=sig.mrsigner,
            mrenclave=sig.mrenclave,
            attributes=control.attributes,
            miscselect=control.miscselect,
            isvprodid=sig.isvprodid,
            isvsvn=sig.isvsvn,
        )

    @property
    def debug(self) -> bool:
        return self.attributes.has(AttributeFlags.DEBUG)

    @property
    def provision_key(self) -> bool:
        return self.attributes.has(AttributeFlags.PROVISIONKEY)

    @property
    def einittoken_key(self) -> bool:
        return self.attributes.has(AttributeFlags.EINITTOKEN_KEY)


@dataclass(frozen=True)
class Admit:
    """The launch may proceed: a token will be issued."""

    entry: SignerEntry


@dataclass(frozen=True)
class Denial:
    """The launch is refused by ``rule``; ``admin_command`` would admit it ("" if none can)."""

    rule: str
    reason: str
    message: str
    #: None only when the request was too malformed to name them.
    mrsigner: Measurement | None
    mrenclave: Measurement | None
    admin_command: str

    def hint(self, *, locked: bool) -> str:
        """What to tell the user: the admin command, or why none helps now."""
        if not self.admin_command:
            return "no allowlist entry can allow this"
        if locked:
            return (
                "the launch policy is locked until the platform is reset; after a reset an "
                f"admin can allow it: {self.admin_command}"
            )
        return f"an admin can allow it: {self.admin_command}"


Decision = Admit | Denial


def malformed_denial(why: str) -> Denial:
    """The denial of a request whose SIGSTRUCT or SECS does not parse."""
    return Denial(
        rule="malformed",
        reason="LAUNCH_MALFORMED_REQUEST",
        message=f"launch denied: {why} (rule malformed)",
        mrsigner=None,
        mrenclave=None,
        admin_command="",
    )


def _deny(rule: str, reason: str, why: str, request: LaunchRequest, command: str) -> Denial:
    return Denial(
        rule=rule,
        reason=reason,
        message=f"launch denied for MRSIGNER {request.mrsigner.hex()} (MRENCLAVE "
        f"{request.mrenclave.hex()}): {why} (rule {rule})",
        mrsigner=request.mrsigner,
        mrenclave=request.mrenclave,
        admin_command=command,
    )


def admitting_entry(request: LaunchRequest, base: SignerEntry | None) -> SignerEntry:
    """The smallest change to ``base`` (or a new entry) that admits ``request``."""
    entry = base or SignerEntry(request.mrsigner)
    ids = entry.isvprodids
    return replace(
        entry,
        allow_debug=entry.allow_debug or request.debug,
        allow_provision_key=entry.allow_provision_key or request.provision_key,
        isvprodids=None if ids is None else ids | {request.isvprodid},
        min_isvsvn=min(entry.min_isvsvn, request.isvsvn),
    )


def decide(allowlist: Allowlist, request: LaunchRequest) -> Decision:
    """Admit ``request`` or deny it by the first rule it breaks (fixed order)."""
    if request.einittoken_key:
        return _deny(
            "einittoken_key",
            "LAUNCH_EINITTOKEN_KEY_NOT_ALLOWED",
            "the enclave asks for EINITTOKEN_KEY, which only the launch enclave holds",
            request,
            "",
        )
    entry = allowlist.get(request.mrsigner)
    command = admitting_entry(request, entry).add_command()
    if entry is None:
        return _deny(
            "signer", "LAUNCH_SIGNER_NOT_LISTED",
            "the signer is not on the launch allowlist", request, command,
        )
    if request.debug and not entry.allow_debug:
        return _deny(
            "allow_debug", "LAUNCH_DEBUG_NOT_ALLOWED",
            "the enclave asks for DEBUG and the signer's entry does not allow debug enclaves",
            request, command,
        )
    if request.provision_key and not entry.allow_provision_key:
        return _deny(
            "allow_provision_key", "LAUNCH_PROVISION_KEY_NOT_ALLOWED",
            "the enclave asks for PROVISIONKEY and the signer's entry does not allow it",
            request, command,
        )
    if entry.isvprodids is not None and request.isvprodid not in entry.isvprodids:
        allowed = ", ".join(str(i) for i in sorted(entry.isvprodids))
        return _deny(
            "isvprodid", "LAUNCH_ISVPRODID_NOT_ALLOWED",
            f"ISVPRODID {request.isvprodid} is not among the entry's ({allowed})",
            request, command,
        )
    if request.isvsvn < entry.min_isvsvn:
        return _deny(
            "min_isvsvn", "LAUNCH_ISVSVN_TOO_LOW",
            f"ISVSVN {request.isvsvn} is below the entry's minimum {entry.min_isvsvn}",
            request, command,
        )
    return Admit(entry)
