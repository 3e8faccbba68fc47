"""Relying-party policy applied to a verdict: which enclaves, TCB statuses, advisories, trust
anchors and freshness a relying party accepts.

Invariants:

* The default policy is strict: only ``UpToDate``, no debug enclaves, only the Intel SGX Root
  CA as trust anchor, no collateral grace. Every relaxation is an explicit field.
* A verdict that is not verified never passes, whatever the policy.
* ``Revoked`` can never be made acceptable: the constructor refuses it.
* Evaluation reports *every* violated rule, in a fixed order, each with a stable
  :class:`ViolationCode`, a message naming the values involved and a hint. A rule whose input
  is missing from a verified verdict is violated (fail closed).
* A policy is a frozen value. It comes from TOML (``tomllib``) or from a request mapping through
  :meth:`Policy.from_mapping`, which rejects unknown keys, wrong types and out-of-range values;
  nothing is read at import time. :meth:`Policy.digest` is the SHA-256 of its canonical JSON,
  so equal policies have equal hashes whatever their source.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sgx_verifier.challenge import ChallengeError
from sgx_verifier.errors import VerificationError
from sgx_verifier.verdict import TcbStatus, Verdict

INTEL_ANCHOR = "intel-sgx-root-ca"
POLICY_VERSION = 1
MAX_GRACE = 30 * 24 * 3600
_ADVISORY = re.compile(r"^[A-Z][A-Z0-9-]{2,63}$")
_ANCHOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PolicyError(VerificationError, ValueError):
    """A policy that cannot be used: unknown keys, wrong types, contradictions."""


class ViolationCode(StrEnum):
    """Stable codes of violated policy rules. Values never change meaning."""

    NOT_VERIFIED = "POLICY_NOT_VERIFIED"
    TCB_STATUS = "POLICY_TCB_STATUS"
    ADVISORY = "POLICY_ADVISORY"
    TCB_EVALUATION_NUMBER = "POLICY_TCB_EVALUATION_NUMBER"
    TRUST_ANCHOR = "POLICY_TRUST_ANCHOR"
    DEBUG_ENCLAVE = "POLICY_DEBUG_ENCLAVE"
    MRENCLAVE = "POLICY_MRENCLAVE"
    MRSIGNER = "POLICY_MRSIGNER"
    ISVPRODID = "POLICY_ISVPRODID"
    ISVSVN = "POLICY_ISVSVN"
    REPORT_DATA = "POLICY_REPORT_DATA"
    CHALLENGE_REQUIRED = "POLICY_CHALLENGE_REQUIRED"
    CHALLENGE = "POLICY_CHALLENGE"


@dataclass(frozen=True, slots=True)
class Violation:
    """One violated rule. ``detail`` refines the code (e.g. the challenge's own code)."""

    code: ViolationCode
    message: str
    hint: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        doc = {"code": self.code.value, "message": self.message, "hint": self.hint}
        if self.detail:
            doc["detail"] = self.detail
        return doc


@dataclass(frozen=True, slots=True)
class PolicyResult:
    passed: bool
    violations: tuple[Violation, ...]

    def __post_init__(self) -> None:
        if self.passed == bool(self.violations):
            raise ValueError("a policy result passes exactly when it has no violations")

    def codes(self) -> tuple[ViolationCode, ...]:
        return tuple(v.code for v in self.violations)

    def to_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "violations": [v.to_dict() for v in self.violations]}


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """What the caller established beyond the verdict, for the rules that need it.

    ``challenge_presented`` says a challenge came with the quote; ``challenge_error`` is why it
    was refused (None when it was redeemed). ``tcb_evaluation_data_number`` is that of the TCB
    Info the appraisal used.
    """

    challenge_presented: bool = False
    challenge_error: ChallengeError | None = None
    tcb_evaluation_data_number: int | None = None


_FIELDS = (
    "accepted_statuses",
    "allow_debug",
    "accepted_advisory_ids",
    "trust_anchors",
    "mrenclave",
    "mrsigner",
    "isv_prod_id",
    "min_isv_svn",
    "expected_report_data",
    "require_challenge",
    "collateral_grace_seconds",
    "min_tcb_evaluation_data_number",
)
_NULLABLE = frozenset(
    {
        "accepted_advisory_ids",
        "isv_prod_id",
        "min_isv_svn",
        "expected_report_data",
        "min_tcb_evaluation_data_number",
    }
)


@dataclass(frozen=True, slots=True)
class Policy:
    """What a relying party accepts from a verified quote.

    Empty ``mrenclave``/``mrsigner`` sets and ``None`` numbers mean "no constraint";
    ``accepted_advisory_ids=None`` leaves advisories to the status rule, while a set requires
    every advisory of the verdict to be listed in it.
    """

    accepted_statuses: frozenset[TcbStatus] = frozenset({TcbStatus.UP_TO_DATE})
    allow_debug: bool = False
    accepted_advisory_ids: frozenset[str] | None = None
    trust_anchors: frozenset[str] = frozenset({INTEL_ANCHOR})
    mrenclave: frozenset[bytes] = frozenset()
    mrsigner: frozenset[bytes] = frozenset()
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    expected_report_data: bytes | None = None
    require_challenge: bool = False
    collateral_grace_seconds: int = 0
    min_tcb_evaluation_data_number: int | None = None
    _digest: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.accepted_statuses:
            raise PolicyError("policy: at least one TCB status must be accepted")
        if not all(isinstance(s, TcbStatus) for s in self.accepted_statuses):
            raise PolicyError("policy: accepted_statuses holds a value that is not a TcbStatus")
        if TcbStatus.REVOKED in self.accepted_statuses:
            raise PolicyError("policy: the Revoked TCB status can never be accepted")
        if not self.trust_anchors:
            raise PolicyError("policy: at least one trust anchor must be allowed")
        for name in self.trust_anchors:
            if not _ANCHOR_NAME.match(name):
                raise PolicyError(f"policy: {name!r} is not a trust anchor name")
        for advisory in self.accepted_advisory_ids or ():
            if not _ADVISORY.match(advisory):
                raise PolicyError(f"policy: {advisory!r} is not an advisory ID (INTEL-SA-NNNNN)")
        for what, values in (("mrenclave", self.mrenclave), ("mrsigner", self.mrsigner)):
            for value in values:
                if len(value) != 32:
                    raise PolicyError(f"policy: a {what} is 32 bytes, not {len(value)}")
        for what, number in (("isv_prod_id", self.isv_prod_id), ("min_isv_svn", self.min_isv_svn)):
            if number is not None and not 0 <= number <= 0xFFFF:
                raise PolicyError(f"policy: {what} is a 16-bit number, not {number}")
        if self.expected_report_data is not None and len(self.expected_report_data) != 64:
            raise PolicyError(
                f"policy: expected_report_data is 64 bytes, not {len(self.expected_report_data)}"
            )
        if self.expected_report_data is not None and self.require_challenge:
            raise PolicyError(
                "policy: expected_report_data and require_challenge both fix REPORTDATA; "
                "choose one"
            )
        if not 0 <= self.collateral_grace_seconds <= MAX_GRACE:
            raise PolicyError(
                f"policy: collateral_grace_seconds is 0..{MAX_GRACE}, "
                f"not {self.collateral_grace_seconds}"
            )
        if self.min_tcb_evaluation_data_number is not None and not (
            0 <= self.min_tcb_evaluation_data_number < 1 << 32
        ):
            raise PolicyError("policy: min_tcb_evaluation_data_number is a 32-bit number")
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "_digest", hashlib.sha256(canonical.encode()).hexdigest())

    # -- identity ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: every field, sets sorted, bytes in lowercase hex."""
        return {
            "version": POLICY_VERSION,
            "accepted_statuses": sorted(s.value for s in self.accepted_statuses),
            "allow_debug": self.allow_debug,
            "accepted_advisory_ids": (
                None if self.accepted_advisory_ids is None else sorted(self.accepted_advisory_ids)
            ),
            "trust_anchors": sorted(self.trust_anchors),
            "mrenclave": sorted(m.hex() for m in self.mrenclave),
            "mrsigner": sorted(m.hex() for m in self.mrsigner),
            "isv_prod_id": self.isv_prod_id,
            "min_isv_svn": self.min_isv_svn,
            "expected_report_data": (
                None if self.expected_report_data is None else self.expected_report_data.hex()
            ),
            "require_challenge": self.require_challenge,
            "collateral_grace_seconds": self.collateral_grace_seconds,
            "min_tcb_evaluation_data_number": self.min_tcb_evaluation_data_number,
        }

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON form: the policy hash tokens carry."""
        return self._digest

    # -- sources -------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], source: str = "policy") -> Policy:
        """A policy from a parsed TOML document or a request; absent keys keep the defaults."""
        unknown = sorted(set(doc) - set(_FIELDS) - {"version"})
        if unknown:
            raise PolicyError(f"{source}: unknown keys {unknown}; known: {sorted(_FIELDS)}")
        if "version" in doc and (type(doc["version"]) is not int or doc["version"] != 1):
            raise PolicyError(f"{source}: version must be {POLICY_VERSION}")
        args: dict[str, Any] = {}
        # JSON (not TOML) can say null: for the optional fields that is "no constraint".
        doc = {k: v for k, v in doc.items() if not (v is None and k in _NULLABLE)}
        get = _Reader(doc, source)
        if "accepted_statuses" in doc:
            args["accepted_statuses"] = frozenset(
                _status(s, source) for s in get.strings("accepted_statuses")
            )
        if "allow_debug" in doc:
            args["allow_debug"] = get.boolean("allow_debug")
        if "accepted_advisory_ids" in doc:
            args["accepted_advisory_ids"] = frozenset(get.strings("accepted_advisory_ids"))
        if "trust_anchors" in doc:
            args["trust_anchors"] = frozenset(get.strings("trust_anchors"))
        for name in ("mrenclave", "mrsigner"):
            if name in doc:
                args[name] = frozenset(get.hex(name, item, 32) for item in get.strings(name))
        for name in ("isv_prod_id", "min_isv_svn", "min_tcb_evaluation_data_number"):
            if name in doc:
                args[name] = get.integer(name)
        if "expected_report_data" in doc:
            args["expected_report_data"] = get.hex(
                "expected_report_data", get.string("expected_report_data"), 64
            )
        if "require_challenge" in doc:
            args["require_challenge"] = get.boolean("require_challenge")
        if "collateral_grace_seconds" in doc:
            args["collateral_grace_seconds"] = get.integer("collateral_grace_seconds")
        try:
            return cls(**args)
        except PolicyError as e:
            raise PolicyError(f"{source}: {e}") from None

    @classmethod
    def from_toml(cls, text: str, source: str = "policy") -> Policy:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise PolicyError(f"{source}: not valid TOML: {e}") from None
        return cls.from_mapping(doc, source)

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise PolicyError(f"cannot read policy {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise PolicyError(f"policy {path} is not UTF-8 text") from None
        return cls.from_toml(text, str(path))

    def with_anchors(self, names: Iterable[str]) -> Policy:
        """This policy also allowing the named anchors (e.g. a locally configured test root)."""
        return _replace(self, trust_anchors=self.trust_anchors | frozenset(names))

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(self, verdict: Verdict, facts: PolicyFacts | None = None) -> PolicyResult:
        """Every rule this verdict (and the facts) violate, in a fixed order."""
        facts = facts or PolicyFacts()
        out: list[Violation] = []
        verified = verdict.verified
        if not verified:
            out.append(
                Violation(
                    ViolationCode.NOT_VERIFIED,
                    "the quote was not verified",
                    "see the failed checks; a quote that does not verify is never accepted",
                    detail=verdict.error.code.value if verdict.error else "",
                )
            )
        self._platform_rules(verdict, facts, out, verified)
        self._enclave_rules(verdict, out, verified)
        self._freshness_rules(verdict, facts, out)
        return PolicyResult(not out, tuple(out))

    def _platform_rules(
        self, verdict: Verdict, facts: PolicyFacts, out: list[Violation], verified: bool
    ) -> None:
        status = verdict.tcb_status
        if status is not None or verified:
            if status not in self.accepted_statuses:
                accepted = ", ".join(sorted(s.value for s in self.accepted_statuses))
                advisories = ", ".join(verdict.advisory_ids) or "none listed"
                out.append(
                    Violation(
                        ViolationCode.TCB_STATUS,
                        f"TCB status {status} is not accepted (accepted: {accepted}); "
                        f"advisories: {advisories}",
                        "update the platform (BIOS/microcode, SGX PSW and quoting enclave) and "
                        "re-attest, or accept this status explicitly in your policy after "
                        "reviewing the advisories",
                    )
                )
        if self.accepted_advisory_ids is not None:
            extra = sorted(set(verdict.advisory_ids) - self.accepted_advisory_ids)
            if extra:
                out.append(
                    Violation(
                        ViolationCode.ADVISORY,
                        f"advisories {', '.join(extra)} are not in the accepted list",
                        "apply the mitigations the advisories describe and add them to "
                        "accepted_advisory_ids, or update the platform",
                    )
                )
        if self.min_tcb_evaluation_data_number is not None and (
            verified or facts.tcb_evaluation_data_number is not None
        ):
            number = facts.tcb_evaluation_data_number
            if number is None or number < self.min_tcb_evaluation_data_number:
                out.append(
                    Violation(
                        ViolationCode.TCB_EVALUATION_NUMBER,
                        f"the TCB Info's tcbEvaluationDataNumber is {number}, the policy "
                        f"requires at least {self.min_tcb_evaluation_data_number}",
                        "refresh the collateral (sgxemu verifier collateral import, or "
                        "RefreshCollateral) so that a recent TCB evaluation is used",
                    )
                )
        anchor = verdict.trust_anchor
        if anchor is not None or verified:
            name = anchor.name if anchor is not None else None
            if name not in self.trust_anchors:
                allowed = ", ".join(sorted(self.trust_anchors))
                out.append(
                    Violation(
                        ViolationCode.TRUST_ANCHOR,
                        f"the quote chains to trust anchor {name!r}, the policy allows {allowed}",
                        "a quote from the emulator proves nothing about real hardware; add the "
                        "anchor to trust_anchors only where a test anchor is acceptable",
                    )
                )

    def _enclave_rules(self, verdict: Verdict, out: list[Violation], verified: bool) -> None:
        enclave = verdict.enclave
        if enclave is None:
            if verified:
                out.append(
                    Violation(
                        ViolationCode.MRENCLAVE,
                        "the verdict carries no enclave identity",
                        "this is a verifier bug; report it",
                    )
                )
            return
        if enclave.debug and not self.allow_debug:
            out.append(
                Violation(
                    ViolationCode.DEBUG_ENCLAVE,
                    "the enclave runs in debug mode: its memory can be read and changed from "
                    "outside",
                    "launch the enclave without debug (production signing) and re-attest",
                )
            )
        if self.mrenclave and enclave.mrenclave not in self.mrenclave:
            out.append(
                Violation(
                    ViolationCode.MRENCLAVE,
                    f"MRENCLAVE {enclave.mrenclave.hex() or '(none)'} is not in the policy's set",
                    "attest the enclave build the policy names, or add this measurement",
                )
            )
        if self.mrsigner and enclave.mrsigner not in self.mrsigner:
            out.append(
                Violation(
                    ViolationCode.MRSIGNER,
                    f"MRSIGNER {enclave.mrsigner.hex() or '(none)'} is not in the policy's set",
                    "sign the enclave with a key the policy names, or add this signer",
                )
            )
        if self.isv_prod_id is not None and enclave.isv_prod_id != self.isv_prod_id:
            out.append(
                Violation(
                    ViolationCode.ISVPRODID,
                    f"ISVPRODID {enclave.isv_prod_id}, the policy requires {self.isv_prod_id}",
                    "attest the product the policy names",
                )
            )
        if self.min_isv_svn is not None and enclave.isv_svn < self.min_isv_svn:
            out.append(
                Violation(
                    ViolationCode.ISVSVN,
                    f"ISVSVN {enclave.isv_svn} is below the policy's minimum {self.min_isv_svn}",
                    "deploy the enclave's security update (a higher ISVSVN) and re-attest",
                )
            )
        if self.expected_report_data is not None and not hmac.compare_digest(
            enclave.report_data, self.expected_report_data
        ):
            out.append(
                Violation(
                    ViolationCode.REPORT_DATA,
                    f"REPORTDATA {enclave.report_data.hex()} is not the expected value",
                    "quote again with the report data the relying party expects",
                )
            )

    def _freshness_rules(
        self, verdict: Verdict, facts: PolicyFacts, out: list[Violation]
    ) -> None:
        del verdict
        if facts.challenge_error is not None:
            err = facts.challenge_error
            out.append(
                Violation(
                    ViolationCode.CHALLENGE,
                    f"the challenge was refused: {err.message}",
                    err.hint,
                    detail=err.code.value,
                )
            )
        elif self.require_challenge and not facts.challenge_presented:
            out.append(
                Violation(
                    ViolationCode.CHALLENGE_REQUIRED,
                    "the policy requires a challenge and none came with the quote",
                    "request a challenge (CreateChallenge), put SHA-256(challenge || user data) "
                    "in REPORTDATA[0:32], quote, and send the challenge with the quote",
                )
            )


class _Reader:
    """Typed access to a policy document, with errors naming the key."""

    def __init__(self, doc: Mapping[str, Any], source: str) -> None:
        self._doc = doc
        self._source = source

    def _fail(self, key: str, expected: str) -> PolicyError:
        return PolicyError(f"{self._source}: {key} must be {expected}")

    def boolean(self, key: str) -> bool:
        value = self._doc[key]
        if type(value) is not bool:
            raise self._fail(key, "true or false")
        return value

    def integer(self, key: str) -> int:
        value = self._doc[key]
        if type(value) is not int:
            raise self._fail(key, "an integer")
        return value

    def string(self, key: str) -> str:
        value = self._doc[key]
        if type(value) is not str:
            raise self._fail(key, "a string")
        return value

    def strings(self, key: str) -> list[str]:
        value = self._doc[key]
        if not isinstance(value, list | tuple) or not all(type(v) is str for v in value):
            raise self._fail(key, "a list of strings")
        if len(set(value)) != len(value):
            raise PolicyError(f"{self._source}: {key} lists a value twice")
        return list(value)

    def hex(self, key: str, text: str, size: int) -> bytes:
        if not re.fullmatch(r"[0-9a-fA-F]*", text) or len(text) != 2 * size:
            raise self._fail(key, f"{size} bytes in hex ({2 * size} hex digits)")
        return bytes.fromhex(text)


def _status(text: str, source: str) -> TcbStatus:
    try:
        return TcbStatus(text)
    except ValueError:
        known = ", ".join(s.value for s in TcbStatus)
        raise PolicyError(f"{source}: unknown TCB status {text!r}; known: {known}") from None


def _replace(policy: Policy, **changes: Any) -> Policy:
    current = {name: getattr(policy, name) for name in _FIELDS}
    current.update(changes)
    return Policy(**current)


#: The policy applied unless told otherwise.
DEFAULT_POLICY = Policy()
