"""Installing the real Keystone, Placement and Neutron API server that ``openstack_services`` runs.

Each service goes into its own virtual environment (their oslo.* pins overlap), from PyPI, held
to the versions ``openstack_pins/<service>.txt`` froze, and cached under
``~/.cache/fedbroker-openstack/<key>`` (``$FEDBROKER_OPENSTACK_CACHE`` overrides the folder; the
key covers the pins and the Python version, so a change of either installs afresh).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

#: Versions known to work together on Python 3.11 (each in its own venv, so they need not agree);
#: every other package of a venv is held to what ``openstack_pins/<service>.txt`` froze.
PINS: Mapping[str, tuple[str, ...]] = {
    "keystone": ("keystone==30.0.0", "gunicorn==27.0.1"),
    "placement": ("openstack-placement==16.0.0", "gunicorn==27.0.1"),
    "neutron": ("neutron==29.0.0", "gunicorn==27.0.1"),
}
SERVICES = tuple(PINS)
PIN_FILES = Path(__file__).parent / "openstack_pins"
INSTALL_TIMEOUT_S = 900.0


class ServicesError(RuntimeError):
    """The services could not be installed or started; the message carries the log tail."""


def cache_root() -> Path:
    """Where the service venvs are cached between runs."""
    env = os.environ.get("FEDBROKER_OPENSTACK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedbroker-openstack"


def default_run_dir() -> Path:
    """The run folder ``fedbroker openstack up`` uses unless told otherwise."""
    env = os.environ.get("FEDBROKER_OPENSTACK_RUN")
    return Path(env).expanduser() if env else cache_root() / "run"


def cache_key() -> str:
    """A key over the pins and the Python version, so a change of either installs afresh."""
    frozen = {svc: (PIN_FILES / f"{svc}.txt").read_text() for svc in SERVICES}
    text = json.dumps({"pins": PINS, "frozen": frozen, "python": list(sys.version_info[:2])}, sort_keys=True)
    return f"py{sys.version_info[0]}{sys.version_info[1]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(FileNotFoundError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def install(root: Path | None = None, say: Callable[[str], None] = lambda _: None) -> Path:
    """Install the three services into their venvs under the cache (in parallel); return the folder.

    Safe to call from several processes at once (a file lock serialises them); a venv counts as
    installed only once its pip run finished, so an interrupted install is redone.
    """
    base = (root or cache_root()) / cache_key()
    with locked(base.with_suffix(".lock")):
        todo = [s for s in SERVICES if not (base / s / ".installed").exists()]
        if not todo:
            return base
        say(f"installing {', '.join(todo)} into {base} (cached for later runs)")
        started = time.monotonic()
        procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        for svc in todo:
            venv = base / svc
            if venv.exists():
                subprocess.run(["rm", "-rf", str(venv)], check=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            log_path = base / f"{svc}-install.log"
            with log_path.open("wb") as log:
                procs[svc] = (
                    subprocess.Popen(
                        [
                            str(venv / "bin" / "pip"),
                            "install",
                            "--disable-pip-version-check",
                            "-c",
                            str(PIN_FILES / f"{svc}.txt"),
                            *PINS[svc],
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                    log_path,
                )
        deadline = time.monotonic() + INSTALL_TIMEOUT_S
        failed = []
        waiting = dict(procs)
        # Poll rather than wait in turn, so each service is reported as its pip run ends.
        while waiting:
            for svc, (proc, log_path) in list(waiting.items()):
                code = proc.poll()
                if code is None and time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    code = -1
                if code is None:
                    continue
                del waiting[svc]
                if code == 0:
                    (base / svc / ".installed").write_text(" ".join(PINS[svc]) + "\n")
                    say(f"installed {svc} ({time.monotonic() - started:.0f} s)")
                else:
                    failed.append(f"--- {svc}: pip exited with {code} ---\n{tail(log_path)}")
            if waiting:
                time.sleep(0.5)
        if failed:
            raise ServicesError("installing the OpenStack services failed:\n" + "\n".join(failed))
        say(f"installed in {time.monotonic() - started:.0f} s")
        return base
