"""The quoting service's logic: launch the PCE and QE, keep them certified, write quotes.

:class:`QuotingEngine` owns one PCE and one QE on the platform, reached through a
:class:`~sgx_quoting.ports.PlatformPort`, and registers PCK keys through a
:class:`~sgx_quoting.ports.PcsPort`. It holds no socket, no channel, and reads no file of the
platform or of the PCS: its keys come only from EGETKEY (through the platform) and its
certificates only from the PCS API. Its own files are the enclave manifest and the sealed
attestation key in ``$STATE/quoting/``.

Lifecycle:

* launch: each enclave is loaded from its image file by the platform (which opens the file
  itself, under its load policy), granted PROVISIONKEY through the provision socket, then
  initialized with its SIGSTRUCT (in token mode the platform asks launchctl for the token).
  MRENCLAVE, MRSIGNER and the image digest must be the manifest's.
* attestation key: restored from the sealed file; sealed again when it was sealed at a lower
  CPUSVN or QE SVN; generated (and sealed) when there is none or it cannot be opened any more
  (another platform, a new owner epoch).
* certification: the QE report (targeted at the PCE, binding the attestation key) is signed by
  the PCE with the PCK key for the current CPUSVN and PCESVN; the PCK public key is registered
  with the PCS, which returns the PCK certificate chain quotes embed.
* quoting: a REPORT made at another CPUSVN than the certified one means the TCB changed:
  re-certify (and re-seal) first. An enclave call failing with a stale, unknown or expired
  handle (platform reset or restart) re-launches both enclaves once and retries.

Invariants: the enclave state is an immutable snapshot swapped under a lock with a generation
number, so concurrent requests that hit the same stale handle re-launch only once; a quote is
only written by a QE whose certification names the REPORT's CPUSVN; handles never reach logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import ReportBody
from sgx_quoting.enclave_errors import (
    AttestationKeyError,
    EnclaveLaunchError,
    PcsCallError,
    PlatformCallError,
    QuotingStateError,
    QuotingUnavailableError,
    ReportRejectedError,
    ReportTcbMismatchError,
)
from sgx_quoting.enclaves import EnclaveEntry, EnclaveManifest
from sgx_quoting.errors import QuotingError
from sgx_quoting.metrics import QuotingMetrics
from sgx_quoting.pce import PCE_ID, ProvisioningCertificationEnclave, QeCertification
from sgx_quoting.ports import PckChain, PcsPort, PlatformPort
from sgx_quoting.qe import QuotingEnclave
from sgx_rpc.files import read_private, write_atomic

log = logging.getLogger(__name__)

SEALED_KEY_FILE = "attestation-key.sealed"

_T = TypeVar("_T")

#: Platform reasons meaning "this sealed blob cannot be opened here any more".
_UNSEALABLE_REASONS = frozenset(
    {"UNSEAL_FAILED", "MALFORMED_SEALED_DATA", "SGX_INVALID_CPUSVN", "SGX_INVALID_ISVSVN"}
)


@dataclass(frozen=True)
class QuotingInfo:
    """What :meth:`QuotingEngine.info` reports."""

    qe: ReportBody
    pce: ReportBody
    pce_id: bytes
    cpusvn: bytes
    attestation_public_key: bytes
    pck_chain_pem: str


@dataclass(frozen=True)
class _Enclaves:
    """One launched and certified PCE/QE pair (replaced whole, never mutated)."""

    generation: int
    pce_handle: bytes = field(repr=False)
    qe_handle: bytes = field(repr=False)
    lease_seconds: float
    pce: ProvisioningCertificationEnclave
    qe: QuotingEnclave
    certification: QeCertification
    chain: PckChain


class QuotingEngine:
    """The PCE and QE of one platform; :meth:`start` launches them, :meth:`stop` destroys them."""

    def __init__(
        self,
        platform: PlatformPort,
        pcs: PcsPort,
        quoting_dir: Path,
        enclaves_dir: Path,
        *,
        metrics: QuotingMetrics | None = None,
        renew_leases: bool = True,
    ) -> None:
        self._platform = platform
        self._pcs = pcs
        self._dir = Path(quoting_dir)
        self._enclaves_dir = Path(enclaves_dir)
        self._metrics = metrics or QuotingMetrics()
        self._renew = renew_leases
        self._lock = threading.RLock()
        self._state: _Enclaves | None = None
        self._generation = 0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def metrics(self) -> QuotingMetrics:
        return self._metrics

    @property
    def sealed_key_path(self) -> Path:
        return self._dir / SEALED_KEY_FILE

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start renewing leases; launch and certify the enclaves (when that fails, the error
        is raised and the next request tries again, its enclaves renewed all the same)."""
        self._stop.clear()
        if self._renew and self._renewer is None:
            self._renewer = threading.Thread(
                target=self._renew_leases, name="quoting-leases", daemon=True
            )
            self._renewer.start()
        with self._lock:
            if self._state is None:
                self._state = self._launch()

    def stop(self) -> None:
        """Stop renewing and destroy the enclaves (the sealed key stays for the next start)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        with self._lock:
            state, self._state = self._state, None
        if state is not None:
            self._destroy_quietly(state.pce_handle)
            self._destroy_quietly(state.qe_handle)

    def _renew_leases(self) -> None:
        while True:
            with self._lock:
                state = self._state
            period = max(0.05, (state.lease_seconds if state else 3.0) / 3)
            if self._stop.wait(period):
                return
            if state is None:
                continue
            try:
                for handle in (state.pce_handle, state.qe_handle):
                    self._platform.renew_lease(handle)
            except PlatformCallError as e:
                if e.handle_gone:
                    log.warning("quoting enclaves gone (%s); launching them again", e.remote_reason)
                    self._relaunch_quietly(state.generation)
                else:
                    log.warning("lease renewal failed: %s", e)
            except QuotingError as e:
                log.warning("lease renewal failed: %s", e)

    def _relaunch_quietly(self, generation: int) -> None:
        try:
            self._relaunch(generation)
        except QuotingError as e:
            log.warning("re-launching the quoting enclaves failed (will retry): %s", e)

    # -- launching -------------------------------------------------------------------------------

    def _destroy_quietly(self, handle: bytes) -> None:
        destroy_quietly(self._platform, handle)

    def _launch(self) -> _Enclaves:
        """Launch, restore the key, certify. Caller holds the lock."""
        manifest = EnclaveManifest.load(self._dir, self._enclaves_dir)
        mrsigner = manifest.mrsigner
        pce_handle, pce_lease = launch_quoting_enclave(self._platform, manifest.pce, mrsigner)
        try:
            qe_handle, qe_lease = launch_quoting_enclave(self._platform, manifest.qe, mrsigner)
        except BaseException:
            self._destroy_quietly(pce_handle)
            raise
        try:
            pce = ProvisioningCertificationEnclave(self._platform, pce_handle)
            qe = QuotingEnclave(self._platform, qe_handle)
            self._load_attestation_key(qe)
            certification, chain = self._certify(pce, qe)
        except BaseException:
            self._destroy_quietly(pce_handle)
            self._destroy_quietly(qe_handle)
            raise
        self._generation += 1
        self._metrics.launches.inc()
        return _Enclaves(
            generation=self._generation,
            pce_handle=pce_handle,
            qe_handle=qe_handle,
            lease_seconds=min(pce_lease, qe_lease),
            pce=pce,
            qe=qe,
            certification=certification,
            chain=chain,
        )

    def _relaunch(self, generation: int) -> _Enclaves:
        with self._lock:
            state = self._state
            if state is not None and state.generation != generation:
                return state  # another request re-launched already
            if state is not None:
                self._destroy_quietly(state.pce_handle)
                self._destroy_quietly(state.qe_handle)
            self._state = None
            self._state = self._launch()
            return self._state

    # -- the attestation key ---------------------------------------------------------------------

    def _write_sealed(self, sealed: bytes) -> None:
        write_atomic(self.sealed_key_path, sealed, mode=0o600)

    def _load_attestation_key(self, qe: QuotingEnclave) -> None:
        path = self.sealed_key_path
        try:
            sealed: bytes | None = read_private(path)
        except FileNotFoundError:
            sealed = None
        except OSError as e:
            raise QuotingStateError(f"cannot read {path}: {e.strerror}") from e
        if sealed is not None:
            try:
                qe.restore_attestation_key(sealed)
            except AttestationKeyError as e:
                log.warning("the sealed attestation key is unusable (%s); generating a new one", e)
                sealed = None
            except PlatformCallError as e:
                if e.remote_reason not in _UNSEALABLE_REASONS:
                    raise
                log.warning(
                    "the sealed attestation key does not open on this platform (%s); "
                    "generating a new one", e.remote_reason,
                )
                sealed = None
        if sealed is None:
            self._write_sealed(qe.generate_attestation_key())
            log.info("generated a new attestation key")
        elif qe.needs_reseal(sealed):
            self._write_sealed(qe.seal_attestation_key())
            log.info("sealed the attestation key again at the current TCB and QE SVN")

    # -- certification ---------------------------------------------------------------------------

    def _certify(
        self, pce: ProvisioningCertificationEnclave, qe: QuotingEnclave
    ) -> tuple[QeCertification, PckChain]:
        certification = pce.certify(qe.report_for_pce(pce.target_info))
        chain = self._pcs.register_pck(
            certification.pck_public_key,
            cpusvn=certification.cpusvn,
            pcesvn=certification.pcesvn,
            pce_id=PCE_ID,
        )
        if (chain.cpusvn, chain.pcesvn) != (certification.cpusvn, certification.pcesvn):
            raise QuotingStateError(
                "the PCS certified another TCB than the one registered "
                f"(CPUSVN {chain.cpusvn.hex()} PCESVN {chain.pcesvn})"
            )
        if chain.revoked:
            log.warning(
                "the PCS says this platform's PCK certificate (CPUSVN %s PCESVN %d) is revoked; "
                "verifiers will reject its quotes",
                certification.cpusvn.hex(), certification.pcesvn,
            )
        self._metrics.certifications.inc()
        log.info(
            "QE certified by the PCE for CPUSVN %s PCESVN %d",
            certification.cpusvn.hex(), certification.pcesvn,
        )
        return certification, chain

    def _recertify(self, generation: int, cpusvn: bytes) -> _Enclaves:
        """Certify again (the TCB changed); re-seal the key at the new TCB. When a PCE or QE
        with another SVN was deployed meanwhile, launch the new ones instead."""
        with self._lock:
            state = self._state
            if state is None or state.generation != generation:
                return self._current()
            if state.certification.cpusvn == cpusvn:
                return state
            manifest = EnclaveManifest.load(self._dir, self._enclaves_dir)
            if (manifest.pce.isvsvn, manifest.qe.isvsvn) != (state.pce.pcesvn, state.qe.qe_svn):
                log.info(
                    "PCE SVN %d and QE SVN %d are deployed; launching them",
                    manifest.pce.isvsvn, manifest.qe.isvsvn,
                )
                return self._relaunch(generation)
            try:
                sealed = read_private(self.sealed_key_path)
            except FileNotFoundError:
                sealed = b""
            if not sealed or state.qe.needs_reseal(sealed):
                self._write_sealed(state.qe.seal_attestation_key())
                log.info("sealed the attestation key again at the current TCB")
            certification, chain = self._certify(state.pce, state.qe)
            self._generation += 1
            self._state = _Enclaves(
                generation=self._generation,
                pce_handle=state.pce_handle,
                qe_handle=state.qe_handle,
                lease_seconds=state.lease_seconds,
                pce=state.pce,
                qe=state.qe,
                certification=certification,
                chain=chain,
            )
            return self._state

    # -- requests --------------------------------------------------------------------------------

    def _current(self) -> _Enclaves:
        with self._lock:
            if self._state is None:
                self._state = self._launch()
            return self._state

    def _with_enclaves(self, op: Callable[[_Enclaves], _T]) -> _T:
        """Run ``op``; when an enclave handle went stale, re-launch once and run it again."""
        try:
            state = self._current()
            try:
                return op(state)
            except PlatformCallError as e:
                if not e.handle_gone:
                    raise
                log.warning("quoting enclaves gone (%s); launching them again", e.remote_reason)
                state = self._relaunch(state.generation)
                return op(state)
        except (PlatformCallError, PcsCallError) as e:
            if e.unavailable:
                raise QuotingUnavailableError(
                    f"the quoting enclaves cannot be used now: {e}"
                ) from e
            raise

    def target_info(self) -> bytes:
        """The QE's 512-byte TARGETINFO."""
        return self._with_enclaves(lambda s: s.qe.target_info.to_bytes())

    def get_quote(self, report: bytes) -> bytes:
        """The DCAP quote v3 of a REPORT targeted at the QE."""
        started = time.perf_counter()

        def op(state: _Enclaves) -> bytes:
            parsed = state.qe.verify_report(report)
            if parsed.body.cpusvn != state.certification.cpusvn:
                state = self._recertify(state.generation, parsed.body.cpusvn)
                if parsed.body.cpusvn != state.certification.cpusvn:
                    raise ReportTcbMismatchError(
                        f"the REPORT was made at CPUSVN {parsed.body.cpusvn.hex()}, the "
                        f"platform is at {state.certification.cpusvn.hex()}; make a new REPORT"
                    )
            return state.qe.quote(parsed, state.certification, state.chain.pem_chain)

        try:
            quote = self._with_enclaves(op)
        except ReportRejectedError as e:
            self._metrics.refusals.labels(e.reason).inc()
            log.info("refused a REPORT: %s: %s", e.reason, e)
            raise
        self._metrics.quotes.inc()
        self._metrics.quote_seconds.observe(time.perf_counter() - started)
        return quote

    def info(self) -> QuotingInfo:
        def op(state: _Enclaves) -> QuotingInfo:
            return QuotingInfo(
                qe=state.qe.identity,
                pce=state.pce.identity,
                pce_id=PCE_ID,
                cpusvn=state.certification.cpusvn,
                attestation_public_key=state.qe.attestation_public_key,
                pck_chain_pem=state.chain.pem_chain,
            )

        return self._with_enclaves(op)


def destroy_quietly(platform: PlatformPort, handle: bytes) -> None:
    """Destroy an enclave; a failure (already gone, platform down) is only logged."""
    try:
        platform.destroy_enclave(handle)
    except QuotingError as e:
        log.debug("destroying a quoting enclave: %s", e)


def launch_quoting_enclave(
    platform: PlatformPort, entry: EnclaveEntry, mrsigner: Measurement
) -> tuple[bytes, float]:
    """Load ``entry`` from its image file, grant PROVISIONKEY, initialize; returns the handle
    and the lease period. MRENCLAVE, MRSIGNER and the image digest must be the manifest's; a
    failure after the load destroys the enclave again."""
    sigstruct = entry.read_sigstruct()
    what = entry.name.upper()
    try:
        loaded = platform.load_enclave_from_file(entry.image, sigstruct, provision_key=True)
    except PlatformCallError as e:
        raise _launch_error(what, "load", e) from e
    try:
        if loaded.image_sha256 != entry.image_sha256:
            raise QuotingStateError(
                f"the platform loaded a {what} image with SHA-256 {loaded.image_sha256.hex()}, "
                f"not the manifest's {entry.image_sha256.hex()} ({entry.image})"
            )
        try:
            platform.grant_provision_key(loaded.handle)
            got_mrenclave, got_mrsigner = platform.init_enclave(loaded.handle, sigstruct)
        except PlatformCallError as e:
            raise _launch_error(what, "initialize", e) from e
        if got_mrenclave != entry.mrenclave or got_mrsigner != mrsigner:
            raise QuotingStateError(
                f"the {what} launched as MRENCLAVE {got_mrenclave.hex()} MRSIGNER "
                f"{got_mrsigner.hex()}, not the manifest's"
            )
    except BaseException:
        destroy_quietly(platform, loaded.handle)
        raise
    log.info(
        "launched the %s (enclave %s, MRENCLAVE %s, ISVSVN %d)",
        what, loaded.enclave_id, entry.mrenclave.hex(), entry.isvsvn,
    )
    return loaded.handle, loaded.lease_seconds


def _launch_error(what: str, step: str, error: PlatformCallError) -> QuotingError:
    if error.unavailable:
        return QuotingUnavailableError(f"the platform did not answer when launching the {what}")
    hint = error.metadata.get("hint", "")
    message = f"the platform refused to {step} the {what}: {error.remote_reason}: " + (
        error.remote_message
    )
    if hint and hint not in message:
        message += f" ({hint})"
    return EnclaveLaunchError(message, error)
