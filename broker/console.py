"""The ``fedbroker`` console script: gRPC's C-core log kept out before gRPC loads, then the CLI.

gRPC's C core reads ``GRPC_VERBOSITY`` and ``GRPC_TRACE`` once, when ``grpc`` is imported, and then
writes its own lines straight to stderr, around Python's logging (``Handshake failed with error
SSL_ERROR_SSL …`` for every caller that tries plaintext): in a JSON log they break the lines, and
in front of a user they repeat in C-core words what the CLI says better. So unless the environment
sets them, neither is on. ``GRPC_VERBOSITY=ERROR fedbroker …`` brings the C-core log back.
"""

from __future__ import annotations

import os


def quiet_grpc_core() -> None:
    """Default ``GRPC_VERBOSITY`` to NONE and ``GRPC_TRACE`` to empty; must run before ``import grpc``."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    os.environ.setdefault("GRPC_TRACE", "")


def main() -> int:
    """Entry point of the ``fedbroker`` console script."""
    quiet_grpc_core()
    from broker.cli import main as cli_main

    return cli_main()


__all__ = ["main", "quiet_grpc_core"]
