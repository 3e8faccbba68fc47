"""gRPC for launchctl: the client of the platform, the LaunchControlService servicer and its
authorization, the status table, and the client the CLI uses. Only this package imports
generated ``sgx.*`` code."""
