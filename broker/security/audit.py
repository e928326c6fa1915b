"""The audit log: every state-changing call, with who, what and the result, one JSON line each.

It is its own logger (``fedbroker.audit.<sp>``, not propagated to the process log) writing to
``audit.log`` in the data directory, so it can be kept, shipped and read apart from debugging output.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from broker.security.auth import Principal


class AuditLog:
    """Appends one record per state-changing call to the SP's audit file."""

    def __init__(self, sp_id: str, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self._log = logging.getLogger(f"fedbroker.audit.{sp_id}")
        self._log.propagate = False
        self._log.setLevel(logging.INFO)
        self._clock = clock
        self._handler: logging.Handler | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handler = logging.FileHandler(path, encoding="utf-8")
            self._handler.setFormatter(logging.Formatter("%(message)s"))
            self._log.addHandler(self._handler)

    def record(
        self,
        rpc: str,
        principal: Principal | None,
        target: str,
        result: str,
        detail: str = "",
        *,
        peer: str = "",
    ) -> None:
        """One call: ``result`` is OK or the gRPC status name; ``principal`` None when authentication failed."""
        entry = {
            "at": round(self._clock(), 3),
            "rpc": rpc,
            "who": principal.id if principal else "",
            "role": str(principal.role) if principal else "",
            "on_behalf_of": principal.on_behalf_of if principal else "",
            "peer": principal.peer if principal else peer,
            "target": target[:256],
            "result": result,
            "detail": detail[:512],
        }
        self._log.info(json.dumps(entry, sort_keys=True))

    def close(self) -> None:
        """Detach and close the file."""
        if self._handler is not None:
            self._log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
