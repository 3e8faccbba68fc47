"""The launch-control daemon: the admin-configured, lockable MRSIGNER allowlist (the LE).

Layers (STYLE.md): ``allowlist``, ``policy``, ``audit``, ``lock`` and ``boot`` are pure domain
modules; ``store`` is the durable, sealed-key-authenticated SQLite state; ``le`` builds, signs
and runs the launch enclave's token MAC; ``daemon`` composes them over ``platform_api`` (the
platform, reached only through its gRPC API); ``rpc/`` holds everything that touches generated
``sgx.*`` code; ``service`` composes the daemon with its listeners and holds
``initialize_state`` for ``sgxemu init``. Imports only ``sgx_platform.arch`` of the platform.
"""
