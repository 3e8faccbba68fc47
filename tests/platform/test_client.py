"""The platform's published client (``sgx_platform.rpc.client``) against the real service: what
its errors carry, and how a long-lived client (``reconnect_wait``) rides out a platform restart.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sgx.platform.v1 import platform_pb2 as pb
from sgx_platform.config import PlatformConfig, parse_config
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_platform.service import PlatformService, initialize_state
from sgx_rpc.channel import QUICK_RECONNECT

S = grpc.StatusCode


@pytest.fixture()
def config() -> Iterator[PlatformConfig]:
    d = Path(tempfile.mkdtemp(prefix="sgxc", dir="/tmp"))
    try:
        initialize_state(d / "platform")
        yield parse_config("", d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _serve(config: PlatformConfig) -> PlatformService:
    service = PlatformService(config, max_workers=2)
    service.start()
    return service


def test_an_error_names_the_rpc_and_carries_the_error_info(config: PlatformConfig) -> None:
    service = _serve(config)
    try:
        with PlatformClient.unix(config.sockets.device, timeout=10) as client:
            with pytest.raises(PlatformRpcError) as e:
                client.renew_lease(b"\x00" * 32)
    finally:
        service.stop(grace=1)
    assert e.value.method == "RenewLease"
    assert e.value.code == S.NOT_FOUND
    assert e.value.reason != e.value.code.name, "the reason comes from the ErrorInfo"
    assert e.value.errno_name


@pytest.mark.parametrize("reconnect_wait", [0.0, 0.2])
def test_no_platform_is_unavailable_with_or_without_a_reconnect_wait(
    config: PlatformConfig, reconnect_wait: float
) -> None:
    """Nothing listens: the call fails UNAVAILABLE (after the wait, a deadline that passed
    without an answer is reported as UNAVAILABLE too), naming the RPC."""
    with PlatformClient.unix(
        config.sockets.device, timeout=10, reconnect_wait=reconnect_wait, options=QUICK_RECONNECT
    ) as client, pytest.raises(PlatformRpcError) as e:
        client.info()
    assert (e.value.code, e.value.reason, e.value.method) == (
        S.UNAVAILABLE, "UNAVAILABLE", "GetPlatformInfo"
    )
    assert e.value.metadata == {}


def test_a_long_lived_client_waits_for_a_restarting_platform(config: PlatformConfig) -> None:
    """A call made while the platform is down succeeds once it is back (within the generous
    ``reconnect_wait``), without the caller retrying."""
    first = _serve(config)
    client = PlatformClient.unix(
        config.sockets.device, timeout=60, reconnect_wait=60, options=QUICK_RECONNECT
    )
    try:
        before = client.info().boot_epoch
        first.stop(grace=1)
        answered = threading.Event()
        result: list[pb.GetPlatformInfoResponse | BaseException] = []

        def call() -> None:
            try:
                result.append(client.info())
            except BaseException as e:  # reported below
                result.append(e)
            answered.set()

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        answered.wait(0.3)  # give the call time to find the platform down
        second = _serve(config)
        try:
            worker.join(90)
            assert result, "the call did not return"
            got = result[0]
            assert isinstance(got, pb.GetPlatformInfoResponse), got
            assert got.boot_epoch != before, "answered by the restarted platform"
        finally:
            second.stop(grace=1)
    finally:
        client.close()
