"""The launch-control daemon: the admin-configured, lockable MRSIGNER allowlist (the LE)."""
