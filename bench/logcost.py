"""What a log line costs the broker, written where it is now and handed to a thread (issue 17, item 3:
"logging off the hot path").

A broker writes, per slice it holds a segment of, three lines to its process log (``-> HELD``,
``-> COMMITTED``, ``-> ACTIVE``; the in-flight states log at DEBUG) and one audit line per
state-changing call. Measured here, in this process, with the broker's own handlers
(``broker.cli.logs.configure``, ``broker.security.audit.AuditLog``) writing to files:

* ``log_line_us`` / ``log_line_json_us``: one settled-state line, text and JSON format, written on
  the calling thread as the broker does (CPU µs per line);
* ``log_line_queued_caller_us`` / ``log_line_queued_total_us``: the same line through a stock
  ``QueueHandler`` whose ``QueueListener`` thread formats and writes: what stays on the calling
  thread (the event loop), and the process's CPU in all;
* ``audit_line_us``: one audit record.

The calling thread logs in bursts with a short sleep between, as an event loop does between awaits,
so the listener wakes as it would in a broker.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import queue
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.measures import Figures
from broker.cli import logs
from broker.security.audit import AuditLog

#: Lines per burst, and the pause between bursts.
BURST, PAUSE_S = 20, 0.0005


@contextlib.contextmanager
def _broker_logging(folder: Path, log_format: str) -> Iterator[logging.Logger]:
    """The broker's process log set up as ``serve`` does, to a file; the root's handlers put back after."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    with (folder / f"broker-{log_format}.log").open("w", encoding="utf-8") as stream:
        real, sys.stderr = sys.stderr, stream
        try:
            logs.configure("info", log_format, "T")
        finally:
            sys.stderr = real
        try:
            yield logging.getLogger("broker.core.lifecycle")
        finally:
            for handler in list(root.handlers):
                root.removeHandler(handler)
            for handler in saved:
                root.addHandler(handler)
            root.setLevel(level)


def _cost(
    lines: int, emit: Callable[[int], object], finish: Callable[[], object] = lambda: None
) -> tuple[float, float]:
    """CPU µs per line of the calling thread, and of the whole process (``finish``: what completes the lines)."""
    thread, process = time.thread_time(), time.process_time()
    slept = 0.0
    for i in range(lines):
        emit(i)
        if i % BURST == BURST - 1:
            t0 = time.thread_time()
            time.sleep(PAUSE_S)
            slept += time.thread_time() - t0  # the sleep call's own CPU, not the line's
    caller = (time.thread_time() - thread - slept) * 1e6 / lines
    finish()
    return caller, (time.process_time() - process - slept) * 1e6 / lines


def _line(log: logging.Logger) -> Callable[[int], None]:
    return lambda i: log.info("slice %s -> %s", f"T-{i:012x}", "ACTIVE")


def log_costs(lines: int = 20_000) -> Figures:
    """CPU per log line: written on the caller's thread (text, JSON), through a queue, and per audit line."""
    figures: Figures = {}
    with tempfile.TemporaryDirectory(prefix="fedbroker-logcost-") as tmp:
        folder = Path(tmp)
        for log_format, key in (("text", "log_line_us"), ("json", "log_line_json_us")):
            with _broker_logging(folder, log_format) as log:
                figures[key] = _cost(lines, _line(log))[1]
        with _broker_logging(folder, "text") as log:
            root = logging.getLogger()
            handlers = list(root.handlers)
            q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
            for handler in handlers:
                root.removeHandler(handler)
            root.addHandler(logging.handlers.QueueHandler(q))
            listener = logging.handlers.QueueListener(q, *handlers, respect_handler_level=True)
            listener.start()
            # listener.stop(): the thread's last lines written, counted in the total
            caller, total = _cost(lines, _line(log), listener.stop)
            figures["log_line_queued_caller_us"] = caller
            figures["log_line_queued_total_us"] = total
        audit = AuditLog("T", folder / "audit.log")
        try:
            figures["audit_line_us"] = _cost(lines, lambda i: audit.record("Commit", None, f"T-{i:012x}", "OK"))[1]
        finally:
            audit.close()
    return figures


__all__ = ["log_costs"]
