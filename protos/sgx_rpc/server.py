"""Server bootstrap shared by every sgxemu service.

One :class:`ServiceHost` serves the same servicers on several listeners. Each listener is its
own ``grpc.Server`` so that the authorization interceptor knows *where* a call arrived:

* a Unix socket grants the role its file mode stands for (the device socket is the
  ``/dev/sgx_enclave`` gate: whoever can ``connect()`` has that role). The socket is bound
  under a temporary name, chmod-ed, then renamed into place, so it is never reachable with a
  wider mode than asked;
* a TCP listener always uses TLS; with a client CA it does mTLS and maps the client
  certificate's common name to a role (``Authorizer.role_of_certificate``).

Every listener serves health (``grpc.health.v1``) and reflection. :meth:`ServiceHost.stop`
turns health to NOT_SERVING, lets calls in flight finish within the grace period, and removes
the socket files. :meth:`ServiceHost.serve_forever` stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sgx_rpc.errors import abort

log = logging.getLogger(__name__)

#: Methods every caller may use, whatever its role.
ALWAYS_ALLOWED_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

#: The longest Unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
MAX_UNIX_PATH = 107


@dataclass(frozen=True)
class Caller:
    """Who is calling: the role granted by the listener or certificate, and a description."""

    role: str
    identity: str


_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("sgx_rpc_caller")


def current_caller() -> Caller:
    """The caller of the RPC being served (set by the authorization interceptor)."""
    return _CALLER.get()


@dataclass(frozen=True)
class Authorizer:
    """Which roles may call which methods.

    ``policy`` maps a full method name (``/pkg.Service/Method``) to the roles allowed; a method
    missing from the policy is denied to everyone (fail closed).
    """

    domain: str
    policy: Mapping[str, frozenset[str]]
    role_of_certificate: Callable[[str], str | None] = field(default=lambda _cn: None)

    def allows(self, method: str, role: str) -> bool:
        if method.startswith(ALWAYS_ALLOWED_PREFIXES):
            return True
        return role in self.policy.get(method, frozenset())

    @classmethod
    def for_service(
        cls,
        service: ServiceDescriptor,
        role_methods: Mapping[str, Iterable[str]],
        *,
        domain: str,
        role_of_certificate: Callable[[str], str | None] = lambda _cn: None,
    ) -> Authorizer:
        """The authorizer of ``service`` from the RPC names each role may call.

        Every RPC of the service must be given to some role, and every name must be one of its
        RPCs: a new RPC must be given its roles, and a misspelt name must not leave an RPC
        unreachable (both raise ``AssertionError`` when the service is assembled).
        """
        rpcs = set(service.methods_by_name)
        policy: dict[str, set[str]] = {}
        for role, names in role_methods.items():
            for name in names:
                if name not in rpcs:
                    raise AssertionError(f"{service.full_name} has no RPC {name!r} (role {role})")
                policy.setdefault(f"/{service.full_name}/{name}", set()).add(role)
        missing = rpcs - {path.rsplit("/", 1)[1] for path in policy}
        if missing:
            raise AssertionError(f"{service.full_name}: RPCs without roles: {sorted(missing)}")
        return cls(
            domain=domain,
            policy={path: frozenset(roles) for path, roles in policy.items()},
            role_of_certificate=role_of_certificate,
        )


@dataclass(frozen=True)
class UnixListener:
    path: Path
    mode: int
    role: str


@dataclass(frozen=True)
class TlsListener:
    address: str
    certificate_chain_pem: bytes
    private_key_pem: bytes
    #: With a client CA the listener does mTLS and requires a client certificate.
    client_ca_pem: bytes | None = None
    #: The role of a TLS peer without a client certificate (only when client_ca_pem is None).
    anonymous_role: str = "anonymous"


Listener = UnixListener | TlsListener


def _wrap(behavior: Callable[..., Any], check: Callable[[Any], Caller]) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        caller = check(context)
        token = _CALLER.set(caller)
        try:
            return behavior(request, context)
        finally:
            _CALLER.reset(token)

    return wrapped


if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor


class _AuthorizationInterceptor(_Interceptor):
    def __init__(self, authorizer: Authorizer, listener: Listener) -> None:
        self._authorizer = authorizer
        self._listener = listener

    def _caller(self, context: grpc.ServicerContext) -> Caller:
        if isinstance(self._listener, UnixListener):
            return Caller(self._listener.role, f"unix:{self._listener.path}")
        auth = context.auth_context()
        names: list[bytes] | bytes = auth.get("x509_common_name") or []
        if names:
            first = names[0] if isinstance(names, list) else names
            cn = bytes(first).decode()
            role = self._authorizer.role_of_certificate(cn)
            return Caller(role or "unknown-certificate", f"x509:{cn}")
        return Caller(self._listener.anonymous_role, f"tls:{context.peer()}")

    def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        authorizer = self._authorizer

        def check(context: grpc.ServicerContext) -> Caller:
            caller = self._caller(context)
            if not authorizer.allows(method, caller.role):
                log.warning("denied %s to %s (%s)", method, caller.identity, caller.role)
                abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{method} is not allowed for {caller.role} callers ({caller.identity}); "
                    "use the socket or certificate that grants it",
                    reason="PERMISSION_DENIED",
                    domain=authorizer.domain,
                    metadata={"errno": "EACCES", "method": method, "role": caller.role},
                )
            return caller

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap(handler.unary_unary, check),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap(handler.unary_stream, check),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap(handler.stream_unary, check),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            _wrap(handler.stream_stream, check),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


Registration = Callable[[grpc.Server], None]


class ServiceHost:
    """Serves registered servicers on listeners, with health, reflection and authorization."""

    def __init__(
        self,
        authorizer: Authorizer,
        registrations: Iterable[Registration],
        service_names: Iterable[str],
        *,
        max_workers: int = 8,
        extra_interceptors: Iterable[grpc.ServerInterceptor[Any, Any]] = (),
    ) -> None:
        self._authorizer = authorizer
        self._registrations = tuple(registrations)
        self._service_names = tuple(service_names)
        self._max_workers = max_workers
        self._extra = tuple(extra_interceptors)
        self._health = health.HealthServicer()
        self._servers: list[tuple[grpc.Server, Listener]] = []
        self._bound: dict[Listener, str] = {}
        self._stopped = threading.Event()

    @property
    def health(self) -> health.HealthServicer:
        return self._health

    def _new_server(self, listener: Listener) -> grpc.Server:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers),
            interceptors=[*self._extra, _AuthorizationInterceptor(self._authorizer, listener)],
            options=(("grpc.so_reuseport", 0),),
        )
        for register in self._registrations:
            register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        return server

    def add(self, listener: Listener) -> None:
        self._servers.append((self._new_server(listener), listener))

    def start(self) -> dict[Listener, str]:
        """Bind and start every listener; returns each one's address (``unix:`` or host:port)."""
        for server, listener in self._servers:
            self._bound[listener] = _bind(server, listener)
            server.start()
        for name in ("", *self._service_names):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return dict(self._bound)

    def stop(self, grace: float = 5.0) -> None:
        """Graceful shutdown: NOT_SERVING, finish calls in flight, remove the sockets."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health.enter_graceful_shutdown()
        events = [server.stop(grace) for server, _ in self._servers]
        for event in events:
            event.wait()
        for listener in self._bound:
            if isinstance(listener, UnixListener):
                try:
                    listener.path.unlink()
                except FileNotFoundError:
                    pass

    def serve_forever(self, grace: float = 5.0) -> None:
        """Block until SIGTERM or SIGINT, then stop gracefully."""
        done = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("signal %d: shutting down", signum)
            done.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not done.wait(0.5):
                pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.stop(grace)


def _socket_in_use(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _bind(server: grpc.Server, listener: Listener) -> str:
    if isinstance(listener, UnixListener):
        path = listener.path.absolute()
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise ValueError(f"socket path {path} is longer than {MAX_UNIX_PATH} bytes")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if _socket_in_use(path):
                raise OSError(f"another server is listening on {path}")
            path.unlink()
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        if staging.exists():
            staging.unlink()
        old_umask = os.umask(0o177)
        try:
            server.add_insecure_port(f"unix:{staging}")
        finally:
            os.umask(old_umask)
        os.chmod(staging, listener.mode)
        os.rename(staging, path)
        return f"unix:{path}"
    if listener.client_ca_pem is not None:
        credentials = grpc.ssl_server_credentials(
            [(listener.private_key_pem, listener.certificate_chain_pem)],
            root_certificates=listener.client_ca_pem,
            require_client_auth=True,
        )
    else:
        credentials = grpc.ssl_server_credentials(
            [(listener.private_key_pem, listener.certificate_chain_pem)]
        )
    port = server.add_secure_port(listener.address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listener.address}")
    host = listener.address.rsplit(":", 1)[0]
    return f"{host}:{port}"
