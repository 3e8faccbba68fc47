"""The launch-control daemon: the launch enclave, the state, the lock, the boot configuration,
and the decisions (transport-free; ``rpc/`` serves it, ``service.py`` composes both).

Startup for a platform boot (:meth:`LaunchControl.start`, and again whenever the platform's
boot epoch or CPUSVN changes): launch the LE from its image and the SIGSTRUCT of the platform's
launch mode, derive the EINITTOKEN key once (token mode), open and verify the state with the
sealed key (re-sealing after a TCB update), judge the platform's latch against the state's
policy digest, apply the boot configuration (and lock if it says so), then serve.

Invariants:

* Fail closed. Until a boot's startup has finished, no token is issued (token requests wait a
  bounded time, then get NOT_READY, which the platform turns into a failed launch) and the
  platform gets the bootstrap load policy (only the LE image may supply executable pages).
  If startup fails (a tampered or rolled-back database, a missing key), nothing is served but
  that bootstrap policy, and every call says why.
* Nothing is answered to the platform before the boot configuration of that boot has been
  applied: a request carrying a new boot epoch waits for (and triggers) the new boot's startup.
* The daemon never calls the platform while deciding a launch (the platform is waiting for it);
  platform calls happen in startup, in the background poller and in admin operations.
* Every change holds the state lock from its "not locked" check to its durable commit, and the
  lock holds it from computing the digest to latching it, so the latched digest is always the
  digest of the state that was served. While latched, every change is refused.
* Every launch decision is durably in the audit log before the token or denial is returned.
  Denials are logged with their reason code and the MRSIGNER/MRENCLAVE in hex.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sgx_launchctl.allowlist import (
    Admit,
    Denial,
    LaunchRequest,
    SignerEntry,
    decide,
    malformed_denial,
)
from sgx_launchctl.audit import AuditEntry, AuditRecord
from sgx_launchctl.boot import apply_boot_config, describe_boot_config
from sgx_launchctl.config import LaunchctlConfig
from sgx_launchctl.errors import (
    InvalidRequestError,
    LaunchctlError,
    NotFoundError,
    NotReadyError,
    PlatformCallError,
    PlatformUnavailableError,
    PolicyLockedError,
    StateIntegrityError,
    StateUnsealError,
)
from sgx_launchctl.le import TokenMinter, einittoken_key_request, image_sha256
from sgx_launchctl.lock import LockStatus, lock_status, policy_digest
from sgx_launchctl.platform_api import PlatformApi, PlatformEnclave, PlatformStatus
from sgx_launchctl.policy import LoadPolicy, bootstrap_policy
from sgx_launchctl.store import LaunchState, Store
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import Report, ReportBody
from sgx_platform.arch.sigstruct import Sigstruct

log = logging.getLogger(__name__)

_Change = Callable[[LaunchState], LaunchState]
_Details = Callable[[LaunchState, LaunchState], dict[str, object]]
_PolicyEdit = Callable[[LoadPolicy], LoadPolicy]

#: How long a token request or an admin call waits for a boot's startup to finish.
DEFAULT_WAIT_SECONDS = 5.0
_SELF = "launchctl"
_STALE = ("STALE_HANDLE", "UNKNOWN_HANDLE", "LEASE_EXPIRED")


@dataclass(frozen=True)
class TokenDecision:
    """The answer to the platform: a 304-byte EINITTOKEN or a denial (with its hint)."""

    token: bytes | None
    denial: Denial | None
    hint: str = ""


@dataclass(frozen=True)
class DaemonStatus:
    ready: bool
    locked: bool
    mode: str
    signer_count: int
    policy: LoadPolicy
    policy_digest: bytes
    latched_digest: bytes | None
    boot_epoch: bytes
    le_mrsigner: Measurement
    le_mrenclave: Measurement
    audit_length: int
    audit_head: bytes
    problem: str


@dataclass
class _Boot:
    """What the daemon holds for one platform boot."""

    epoch: bytes
    cpusvn: bytes
    mode: str
    le: PlatformEnclave
    le_report: ReportBody
    minter: TokenMinter | None
    locked: bool = False
    renewed_at: float = 0.0


class _LeKeys:
    """EGETKEY(SEAL) from inside the launch enclave, through the platform."""

    def __init__(self, platform: PlatformApi, handle: bytes, report: ReportBody) -> None:
        self._platform = platform
        self._handle = handle
        self._report = report

    def tcb(self) -> tuple[bytes, int]:
        return self._report.cpusvn, self._report.isvsvn

    def derive(self, key_request: bytes) -> bytes:
        try:
            return self._platform.get_key(self._handle, key_request)
        except PlatformCallError as e:
            raise StateUnsealError(
                f"the launch enclave cannot derive the key of the stored state "
                f"({e.platform_reason}): {e.message}",
                hint="the state belongs to another platform, or to a newer TCB than this one",
            ) from None


class LaunchControl:
    """The daemon's logic over a :class:`PlatformApi`; thread-safe."""

    def __init__(
        self,
        config: LaunchctlConfig,
        platform: PlatformApi,
        *,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        self._config = config
        self._platform = platform
        self._wait = wait_seconds
        self._store: Store | None = None
        self._boot: _Boot | None = None
        self._problem: LaunchctlError | None = None
        self._failed_status: PlatformStatus | None = None
        self._transitioning = False
        #: True while the daemon's own LE load (which pulls the load policy) is in flight.
        self._le_loading = False
        self._cond = threading.Condition()
        #: Serializes changes, launch records, locking and the swap of state at a new boot.
        self._state_lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._poller: threading.Thread | None = None
        le = config.launch_enclave
        self._le_sigstructs: dict[str, bytes] = {}
        self._le_identity: tuple[Measurement, Measurement] | None = None
        self._bootstrap = LoadPolicy((str(le.image.parent),), frozenset())
        self._le_files_loaded = False

    # -- lifetime -------------------------------------------------------------------------------

    def _load_le_files(self) -> None:
        le = self._config.launch_enclave
        try:
            token_sig = le.sigstruct.read_bytes()
            open_sig = le.open_sigstruct.read_bytes()
            digest = image_sha256(le.image)
            parsed = Sigstruct.from_bytes(token_sig)
            Sigstruct.from_bytes(open_sig)
        except OSError as e:
            raise LaunchctlError(
                f"cannot read the launch enclave's files: {e}",
                hint="create them with sgxemu init",
                reason="LE_FILES_MISSING",
            ) from None
        except MalformedStructureError as e:
            raise LaunchctlError(f"the launch enclave's SIGSTRUCT is malformed: {e}",
                                 reason="LE_FILES_MISSING") from None
        self._le_sigstructs = {"token": token_sig, "open": open_sig}
        self._le_identity = (parsed.mrsigner, parsed.mrenclave)
        self._bootstrap = bootstrap_policy(le.image.parent, digest)
        self._le_files_loaded = True

    def start(self) -> None:
        """Start for the platform's current boot; raises (and serves nothing) if that fails."""
        self._load_le_files()
        status = self._platform.status()
        self._transition(status)
        self._poller = threading.Thread(target=self._poll, name="launchctl-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        with self._state_lock:
            boot, self._boot = self._boot, None
            if boot is not None:
                self._destroy_quietly(boot.le)
            if self._store is not None:
                self._store.close()
                self._store = None
        with self._cond:
            self._cond.notify_all()

    # -- a platform boot ----------------------------------------------------------------------

    def _launch(self, status: PlatformStatus) -> _Boot:
        mode = status.launch_mode
        if mode not in ("open", "token"):
            raise PlatformUnavailableError(f"the platform reports an unknown launch mode {mode!r}")
        assert self._le_identity is not None
        le_signer = self._le_identity[0]
        if mode == "token" and status.le_pubkey_hash != le_signer.value:
            raise LaunchctlError(
                f"the platform's LE registers hold {status.le_pubkey_hash.hex()}, but this "
                f"daemon's launch enclave is signed by {le_signer.hex()}",
                hint=f"set le_pubkey_hash = \"{le_signer.hex()}\" in the platform's "
                "configuration (platform.toml) and restart it",
                reason="LE_SIGNER_MISMATCH",
            )
        enclave = self._load_le(mode)
        try:
            report = Report.from_bytes(self._platform.create_report(enclave.handle)).body
            minter = None
            if mode == "token":
                request = einittoken_key_request(report)
                key = self._platform.get_key(enclave.handle, request.to_bytes())
                minter = TokenMinter(report, request, key)
        except BaseException:
            self._destroy_quietly(enclave)
            raise
        return _Boot(
            epoch=status.boot_epoch, cpusvn=status.cpusvn, mode=mode, le=enclave,
            le_report=report, minter=minter, renewed_at=time.monotonic(),
        )

    def _load_le(self, mode: str) -> PlatformEnclave:
        """Load the LE; while the platform cannot reach this daemon yet (its channel to the
        authority socket reconnects after a restart), retry for a bounded time."""
        deadline = time.monotonic() + self._config.platform.startup_seconds
        pause = 0.05
        while True:
            self._le_loading = True
            try:
                return self._platform.load_enclave(
                    self._config.launch_enclave.image, self._le_sigstructs[mode]
                )
            except PlatformCallError as e:
                if e.platform_reason != "LOAD_POLICY_UNAVAILABLE" or self._stop.is_set() or (
                    time.monotonic() + pause > deadline
                ):
                    raise
                log.info("the platform cannot reach the daemon yet; retrying the LE load")
            finally:
                self._le_loading = False
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _transition(self, status: PlatformStatus) -> None:
        """Start serving the boot ``status`` describes (see the module docstring)."""
        with self._cond:
            self._transitioning = True
            self._cond.notify_all()
        boot: _Boot | None = None
        try:
            boot = self._launch(status)
            keys = _LeKeys(self._platform, boot.le.handle, boot.le_report)
            with self._state_lock:
                store = Store.open(
                    self._config.database, keys, caller=_SELF,
                    default_policy=LoadPolicy.defaults(self._config.enclaves_dir),
                )
                try:
                    state = store.state
                    digest = policy_digest(state.allowlist, state.load_policy)
                    boot.locked = (
                        lock_status(status.latched_digest, digest) is LockStatus.LOCKED
                    )
                except BaseException:
                    store.close()
                    raise
                old_boot, old_store = self._boot, self._store
                self._boot, self._store = boot, store
                if old_store is not None:
                    old_store.close()
                if old_boot is not None:
                    self._destroy_quietly(old_boot.le)
                self._apply_boot_configuration(boot, store)
            self._problem = None
            self._failed_status = None
            log.info(
                "serving platform boot %s (%s mode, %s)", status.boot_epoch.hex(), boot.mode,
                "locked" if boot.locked else "unlocked",
            )
        except LaunchctlError as e:
            self._problem = e
            self._failed_status = status
            if boot is not None and self._boot is not boot:
                self._destroy_quietly(boot.le)
            log.error("cannot serve platform boot %s: %s", status.boot_epoch.hex(), e)
            raise
        finally:
            with self._cond:
                self._transitioning = False
                self._cond.notify_all()

    def _apply_boot_configuration(self, boot: _Boot, store: Store) -> None:
        """Boot configuration once per boot epoch; lock when it says so (state lock held)."""
        epoch = boot.epoch
        boot_config = self._config.boot
        state = store.state
        if boot.locked:
            if state.locked_boot != epoch or state.boot_applied != epoch:
                store.apply(
                    lambda s: replace(s, locked_boot=epoch, boot_applied=epoch),
                    lambda old, new: AuditRecord(
                        "lock_observed",
                        _SELF,
                        {
                            "boot_epoch": epoch.hex(),
                            "digest": policy_digest(new.allowlist, new.load_policy).hex(),
                            "boot_configuration": "not applied: the policy is locked",
                        },
                    ),
                )
            return
        if state.boot_applied != epoch:
            store.apply(
                lambda s: apply_boot_config(s, boot_config, epoch),
                lambda old, new: AuditRecord(
                    "boot_configuration_applied",
                    "boot configuration",
                    {
                        **describe_boot_config(boot_config),
                        "boot_epoch": epoch.hex(),
                        "digest": policy_digest(new.allowlist, new.load_policy).hex(),
                    },
                ),
            )
        if boot_config.lock:
            self._latch(boot, store, "boot configuration")

    def _destroy_quietly(self, enclave: PlatformEnclave) -> None:
        try:
            self._platform.destroy_enclave(enclave.handle)
        except PlatformUnavailableError:
            pass

    def _poll(self) -> None:
        period = self._config.platform.poll_seconds
        while not self._stop.is_set():
            self._wake.wait(period)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._poll_once()
            except Exception:  # keep polling whatever one round hit
                log.exception("launch-control poll failed")

    def _poll_once(self) -> None:
        try:
            status = self._platform.status()
        except PlatformUnavailableError as e:
            log.warning("the platform does not answer: %s", e)
            return
        boot = self._boot
        if self._problem is not None:
            permanent = isinstance(self._problem, StateIntegrityError)
            if not permanent or status != self._failed_status:
                self._try_transition(status)
            return
        if boot is None or status.boot_epoch != boot.epoch or status.cpusvn != boot.cpusvn:
            self._try_transition(status)
            return
        with self._state_lock:
            store = self._store
            if store is not None and not boot.locked and status.latched_digest:
                state = store.state
                try:
                    digest = policy_digest(state.allowlist, state.load_policy)
                    boot.locked = lock_status(status.latched_digest, digest) is LockStatus.LOCKED
                except LaunchctlError as e:
                    self._problem, self._failed_status = e, status
                    log.error("%s", e)
                    return
        if time.monotonic() - boot.renewed_at > boot.le.lease_seconds / 3:
            try:
                self._platform.renew_lease(boot.le.handle)
                boot.renewed_at = time.monotonic()
            except PlatformCallError as e:
                if e.platform_reason in _STALE:
                    self._try_transition(status)

    def _try_transition(self, status: PlatformStatus) -> None:
        try:
            self._transition(status)
        except LaunchctlError:
            pass  # recorded in self._problem and logged

    def _ready(self, epoch: bytes = b"") -> _Boot:
        """The boot being served (that of ``epoch`` if given), waiting a bounded time."""
        deadline = time.monotonic() + self._wait
        with self._cond:
            while True:
                if self._problem is not None and not self._transitioning:
                    raise self._problem
                boot = self._boot
                if not self._transitioning and boot is not None:
                    if not epoch or epoch == boot.epoch:
                        return boot
                    self._wake.set()
                if self._stop.is_set():
                    raise NotReadyError("the launch-control daemon is stopping")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NotReadyError(
                        "the launch-control daemon is still starting for this platform boot",
                        hint="retry in a moment",
                    )
                self._cond.wait(remaining)

    def _require_store(self) -> Store:
        store = self._store
        if store is None:
            raise NotReadyError("the launch-control daemon has not opened its state yet")
        return store

    # -- the platform's questions ---------------------------------------------------------------

    def load_policy_for(self, boot_epoch: bytes = b"") -> LoadPolicy:
        """The policy the platform must apply now.

        While the daemon loads its own launch enclave for a new boot, the bootstrap policy
        (that load is what asks). A request for a boot the daemon is not serving yet waits
        (bounded) until the boot configuration of that boot has been applied. Whenever no
        policy can be vouched for, the bootstrap policy: fail closed.
        """
        if self._le_loading:
            return self._bootstrap
        try:
            self._ready(boot_epoch)
        except LaunchctlError:
            return self._bootstrap
        store = self._store
        return self._bootstrap if store is None else store.state.load_policy

    def decide_launch(
        self, sigstruct: bytes, secs: bytes, boot_epoch: bytes, caller: str
    ) -> TokenDecision:
        """A token for exactly this SIGSTRUCT and SECS, or a denial; audited durably first."""
        boot = self._ready(boot_epoch)
        request: LaunchRequest | None
        try:
            request = LaunchRequest.from_bytes(sigstruct, secs)
        except InvalidRequestError as e:
            request = None
            decision: Admit | Denial = malformed_denial(str(e))
        with self._state_lock:
            if boot is not self._boot:
                raise NotReadyError("the platform booted again meanwhile", hint="retry")
            store = self._require_store()
            if request is not None:
                decision = decide(store.state.allowlist, request)
                if isinstance(decision, Admit) and boot.minter is None:
                    decision = Denial(
                        rule="mode",
                        reason="LAUNCH_NOT_TOKEN_MODE",
                        message="the platform is in open launch mode; the launch enclave "
                        "issues no tokens (rule mode)",
                        mrsigner=request.mrsigner,
                        mrenclave=request.mrenclave,
                        admin_command="",
                    )
            store.record(_launch_record(decision, request, boot, caller))
        if isinstance(decision, Admit):
            assert request is not None and boot.minter is not None
            log.info("launch admitted mrsigner=%s mrenclave=%s", request.mrsigner.hex(),
                     request.mrenclave.hex())
            return TokenDecision(boot.minter.mint(request).to_bytes(), None)
        log.warning(
            "launch denied reason=%s rule=%s mrsigner=%s mrenclave=%s", decision.reason,
            decision.rule, decision.mrsigner.hex() if decision.mrsigner else "-",
            decision.mrenclave.hex() if decision.mrenclave else "-",
        )
        return TokenDecision(None, decision, decision.hint(locked=boot.locked))

    # -- admin ----------------------------------------------------------------------------------

    def _apply(self, caller: str, event: str, change: _Change, details: _Details) -> LaunchState:
        boot = self._ready()
        with self._state_lock:
            if boot is not self._boot:
                raise NotReadyError("the platform booted again meanwhile", hint="retry")
            if boot.locked:
                raise PolicyLockedError()
            store = self._require_store()
            return store.apply(
                change, lambda old, new: AuditRecord(event, caller, details(old, new))
            )

    def add_signer(self, entry: SignerEntry, caller: str) -> tuple[SignerEntry, bool]:
        """Add ``entry`` or replace the entry of its MRSIGNER; returns (entry, replaced)."""
        replaced: list[bool] = []

        def change(state: LaunchState) -> LaunchState:
            replaced.append(entry.mrsigner in state.allowlist)
            return replace(state, allowlist=state.allowlist.with_entry(entry))

        def details(old: LaunchState, new: LaunchState) -> dict[str, object]:
            before = old.allowlist.get(entry.mrsigner)
            return {
                "entry": entry.canonical(),
                "replaced": None if before is None else before.canonical(),
            }

        self._apply(caller, "signer_added", change, details)
        return entry, replaced[-1]

    def remove_signer(self, mrsigner: Measurement, caller: str) -> SignerEntry:
        removed: list[SignerEntry] = []

        def change(state: LaunchState) -> LaunchState:
            entry = state.allowlist.get(mrsigner)
            if entry is None:
                raise NotFoundError(
                    f"MRSIGNER {mrsigner.hex()} is not on the allowlist",
                    hint="list the entries with: sgxemu launchctl list",
                )
            removed.append(entry)
            return replace(state, allowlist=state.allowlist.without(mrsigner))

        self._apply(
            caller, "signer_removed", change, lambda old, new: {"entry": removed[-1].canonical()}
        )
        return removed[-1]

    def _policy_change(
        self, caller: str, event: str, what: dict[str, object], edit: _PolicyEdit
    ) -> LoadPolicy:
        new = self._apply(
            caller,
            event,
            lambda s: replace(s, load_policy=edit(s.load_policy)),
            lambda old, new: {**what, "load_policy": new.load_policy.canonical()},
        )
        return new.load_policy

    def allow_image_directory(self, directory: str, caller: str) -> LoadPolicy:
        return self._policy_change(
            caller, "load_policy_changed", {"allow_dir": directory},
            lambda p: p.allow_dir(directory),
        )

    def allow_image_digest(self, digest: bytes, caller: str) -> LoadPolicy:
        if len(digest) != 32:
            raise InvalidRequestError("an image digest is a 32-byte SHA-256")
        return self._policy_change(
            caller, "load_policy_changed", {"allow_digest": digest.hex()},
            lambda p: p.allow_digest(digest),
        )

    def set_load_rule(self, rule: str, enabled: bool, caller: str) -> LoadPolicy:
        return self._policy_change(
            caller, "load_policy_changed", {"rule": rule, "enabled": enabled},
            lambda p: p.with_rule(rule, enabled),
        )

    def lock(self, caller: str) -> bytes:
        """Latch the policy digest in the platform; idempotent while locked."""
        boot = self._ready()
        with self._state_lock:
            if boot is not self._boot:
                raise NotReadyError("the platform booted again meanwhile", hint="retry")
            store = self._require_store()
            return self._latch(boot, store, caller)

    def _latch(self, boot: _Boot, store: Store, caller: str) -> bytes:
        """Latch and audit (state lock held)."""
        state = store.state
        digest = policy_digest(state.allowlist, state.load_policy)
        if boot.locked:
            return digest
        try:
            self._platform.latch_launch_policy(digest)
        except PlatformCallError as e:
            if e.platform_reason != "LATCH_SET":
                raise
            # Someone latched first (a crash between latching and auditing, or another writer).
            status = self._platform.status()
            lock_status(status.latched_digest, digest)  # raises RollbackError if not ours
        boot.locked = True
        epoch = boot.epoch
        store.apply(
            lambda s: replace(s, locked_boot=epoch),
            lambda old, new: AuditRecord(
                "policy_locked", caller, {"digest": digest.hex(), "boot_epoch": epoch.hex()}
            ),
        )
        log.warning("launch policy locked until the platform is reset (digest %s)", digest.hex())
        return digest

    # -- reads ----------------------------------------------------------------------------------

    def signers(self) -> list[SignerEntry]:
        return list(self._require_store().state.allowlist)

    def status(self) -> DaemonStatus:
        store, boot = self._store, self._boot
        latched: bytes | None = None
        try:
            latched = self._platform.status().latched_digest
        except PlatformUnavailableError:
            latched = None
        assert self._le_identity is not None or not self._le_files_loaded
        le = self._le_identity or (Measurement.zero(), Measurement.zero())
        if store is None:
            policy = self._bootstrap
            digest = b""
            count = length = 0
            head = b""
        else:
            state = store.state
            policy = state.load_policy
            digest = policy_digest(state.allowlist, state.load_policy)
            count, length, head = len(state.allowlist), store.audit_length, store.audit_head
        ready = not self._transitioning and boot is not None and self._problem is None
        return DaemonStatus(
            ready=ready,
            locked=bool(boot and boot.locked),
            mode=boot.mode if boot is not None else "unknown",
            signer_count=count,
            policy=policy,
            policy_digest=digest,
            latched_digest=latched,
            boot_epoch=boot.epoch if boot is not None else b"",
            le_mrsigner=le[0],
            le_mrenclave=le[1],
            audit_length=length,
            audit_head=head,
            problem=str(self._problem) if self._problem is not None else "",
        )

    def audit_entries(self, start: int, limit: int) -> list[AuditEntry]:
        return self._require_store().audit_entries(start, limit)

    def verify_audit(self) -> int:
        """Verify the chain on disk; returns its length or raises ``AuditChainError``."""
        return self._require_store().verify_audit()

    @property
    def audit_length(self) -> int:
        return self._require_store().audit_length

    @property
    def database(self) -> Path:
        return self._config.database


def _launch_record(
    decision: Admit | Denial, request: LaunchRequest | None, boot: _Boot, caller: str
) -> AuditRecord:
    details: dict[str, object] = {"boot_epoch": boot.epoch.hex()}
    if request is not None:
        details.update(
            mrsigner=request.mrsigner.hex(),
            mrenclave=request.mrenclave.hex(),
            attributes=f"{request.attributes.flags:#x}/{request.attributes.xfrm:#x}",
            isvprodid=request.isvprodid,
            isvsvn=request.isvsvn,
        )
    if isinstance(decision, Admit):
        return AuditRecord("launch_admitted", caller, details)
    details.update(rule=decision.rule, reason=decision.reason)
    return AuditRecord("launch_denied", caller, details)
