"""Real Keystone, Placement and the Neutron API server on loopback, for tests, scenarios and demos.

Each service is installed into its own cached virtual environment (``scenarios.openstack_install``)
and runs under gunicorn on ``127.0.0.1`` with an ephemeral port (read back from gunicorn's log) and a
SQLite database in the run folder. No Nova, no agents, no message bus: Neutron talks to a
``fake://`` transport and its ML2 plugin has no mechanism driver, so networks, subnets and ports
are database records, which is all a domain agent needs.

Traps this module knows about:

* oslo.config parses ``sys.argv`` when a service loads; under gunicorn those are gunicorn's
  own arguments, so each service is loaded through a small WSGI shim that clears them first.
* Neutron's alembic migrations do not run on SQLite: its tables are created from its models
  (``neutron.db.migration.models.head``) and the alembic heads are stamped.

``LoopbackCloud(run_dir).start()`` brings all three up and writes ``clouds.yaml`` (a cloud for
the broker's service account and one for the admin); ``stop()`` ends every process it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from scenarios.openstack_install import (
    SERVICES,
    ServicesError,
    default_run_dir,
    install,
    tail,
)

CLOUD = "fedbroker-loopback"
ADMIN_CLOUD = "fedbroker-loopback-admin"
REGION = "RegionOne"
START_TIMEOUT_S = 90.0
_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class CloudInfo:
    """Where the running services listen and how to log in (written to ``services.json``)."""

    run_dir: str
    keystone_url: str
    placement_url: str
    neutron_url: str
    admin_password: str
    username: str
    password: str
    project_name: str
    clouds_file: str

    def auth(self) -> dict[str, str]:
        """The broker's service-account settings, as a domain config's ``auth`` mapping."""
        return {
            "auth_url": self.keystone_url,
            "username": self.username,
            "password": self.password,
            "project_name": self.project_name,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
            "region_name": REGION,
        }


@dataclass
class _Proc:
    name: str
    folder: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def log(self) -> Path:
        return self.folder / "gunicorn.log"


class LoopbackCloud:
    """Keystone, Placement and the Neutron API on 127.0.0.1 with SQLite in ``run_dir``."""

    def __init__(self, run_dir: Path, venvs: Path | None = None, say: Callable[[str], None] = lambda _: None) -> None:
        self.run_dir = run_dir
        self._venvs = venvs
        self._say = say
        self._procs: dict[str, _Proc] = {}
        self.info: CloudInfo | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> CloudInfo:
        """Install (cached), start all three services, create accounts and catalog; stop all on failure."""
        venvs = self._venvs or install(say=self._say)
        self._venvs = venvs
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Every start is a fresh cloud: the accounts get new passwords and ``_register`` creates
        # them, so a database left by an earlier run (``up``, ``down``, ``up``) would refuse them.
        for svc in SERVICES:
            if (self.run_dir / svc).exists():
                shutil.rmtree(self.run_dir / svc)
        try:
            return self._start(venvs)
        except BaseException:
            self.stop()
            raise

    def _start(self, venvs: Path) -> CloudInfo:
        t0 = time.monotonic()
        admin_pw = "admin-" + os.urandom(6).hex()
        ks = self._keystone(venvs, admin_pw)
        accounts = {name: f"{name}-" + os.urandom(6).hex() for name in ("placement", "neutron", "fedbroker")}
        pl = self._spawn("placement", venvs, self._placement_conf(ks, accounts["placement"]))
        nt = self._spawn("neutron", venvs, self._neutron_conf(venvs, ks, accounts["neutron"]))
        self._say("keystone: creating the service accounts and the catalog")
        self._register(ks, admin_pw, accounts, pl, nt)
        for p in (pl, nt):
            self._say(f"{p.name}: waiting for its first answer")
            self._wait_http(p, "/")
        clouds = self.run_dir / "clouds.yaml"
        info = CloudInfo(
            run_dir=str(self.run_dir),
            keystone_url=ks.url + "/v3",
            placement_url=pl.url,
            neutron_url=nt.url,
            admin_password=admin_pw,
            username="fedbroker",
            password=accounts["fedbroker"],
            project_name="fedbroker",
            clouds_file=str(clouds),
        )
        self._write_clouds(info, clouds)
        (self.run_dir / "services.json").write_text(json.dumps(asdict(info), indent=2) + "\n")
        self.info = info
        self._say(f"Keystone, Placement and Neutron up in {time.monotonic() - t0:.0f} s")
        return info

    def stop(self) -> None:
        """Stop every service process this object started (SIGTERM, then SIGKILL). Never raises."""
        for p in self._procs.values():
            if p.proc is not None and p.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGTERM)
        for p in self._procs.values():
            if p.proc is None:
                continue
            try:
                p.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGKILL)
                p.proc.wait(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "pids.json").unlink()

    def logs(self, lines: int = 30) -> str:
        """The tail of every service's log, for failure reports."""
        parts = []
        for p in self._procs.values():
            parts.append(f"--- {p.name} ({p.log}) ---\n{tail(p.log, lines)}")
            service_log = p.folder / f"{p.name}.log"
            if service_log.exists():
                parts.append(f"--- {p.name} ({service_log}) ---\n{tail(service_log, lines)}")
        return "\n".join(parts)

    # --- services -----------------------------------------------------------------------------

    def _run(self, name: str, argv: list[str], timeout: float = 180.0) -> None:
        log = self.run_dir / name / "setup.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as fh:
            code = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False).returncode
        if code != 0:
            raise ServicesError(f"{name}: {' '.join(argv[:2])}… exited with {code}:\n{tail(log)}")

    def _keystone(self, venvs: Path, admin_pw: str) -> _Proc:
        # Keystone's in-process cache: without it every token validation rebuilds the token's roles
        # from SQLite (about 1 s each here), so the first call of every new client to Placement or
        # Neutron waits that long and, on a loaded machine, outlasts a 3 s api_timeout_s. One worker
        # per service keeps the memory cache coherent.
        d = self.run_dir / "keystone"
        for sub in ("fernet", "cred"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        conf = d / "keystone.conf"
        conf.write_text(
            textwrap.dedent(f"""\
            [DEFAULT]
            log_file = {d}/keystone.log
            [database]
            connection = sqlite:///{d}/keystone.db
            [token]
            provider = fernet
            expiration = 7200
            [fernet_tokens]
            key_repository = {d}/fernet
            [credential]
            key_repository = {d}/cred
            [identity]
            password_hash_rounds = 4
            [cache]
            enabled = true
            backend = dogpile.cache.memory
            """)
        )
        self._say("keystone: creating its database and keys")
        km = [str(venvs / "keystone" / "bin" / "keystone-manage"), "--config-file", str(conf)]
        user = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
        self._run("keystone", [*km, "db_sync"])
        self._run("keystone", [*km, "fernet_setup", *user])
        self._run("keystone", [*km, "credential_setup", *user])
        p = self._spawn("keystone", venvs, conf)
        url = p.url + "/v3/"
        self._run(
            "keystone",
            [
                *km,
                "bootstrap",
                "--bootstrap-password",
                admin_pw,
                "--bootstrap-region-id",
                REGION,
                "--bootstrap-public-url",
                url,
                "--bootstrap-internal-url",
                url,
                "--bootstrap-admin-url",
                url,
            ],
        )
        self._say("keystone: waiting for its first answer")
        self._wait_http(p, "/v3")
        return p

    def _placement_conf(self, ks: _Proc, password: str) -> Path:
        d = self.run_dir / "placement"
        (d / "etc").mkdir(parents=True, exist_ok=True)
        conf = d / "etc" / "placement.conf"
        conf.write_text(
            textwrap.dedent(f"""\
            [DEFAULT]
            log_file = {d}/placement.log
            [api]
            auth_strategy = keystone
            [placement_database]
            connection = sqlite:///{d}/placement.db
            """)
            + _authtoken(ks, "placement", password)
        )
        self._say("placement: creating its database")
        manage = str(self._venvs_path() / "placement" / "bin" / "placement-manage")
        self._run("placement", [manage, "--config-file", str(conf), "db", "sync"])
        return conf

    def _neutron_conf(self, venvs: Path, ks: _Proc, password: str) -> Path:
        d = self.run_dir / "neutron"
        (d / "lock").mkdir(parents=True, exist_ok=True)
        conf = d / "neutron.conf"
        paste = venvs / "neutron" / "etc" / "neutron" / "api-paste.ini"
        conf.write_text(
            textwrap.dedent(f"""\
            [DEFAULT]
            log_file = {d}/neutron.log
            core_plugin = ml2
            auth_strategy = keystone
            api_paste_config = {paste}
            transport_url = fake:/
            notify_nova_on_port_status_changes = false
            notify_nova_on_port_data_changes = false
            dhcp_agent_notification = false
            [database]
            connection = sqlite:///{d}/neutron.db
            [oslo_concurrency]
            lock_path = {d}/lock
            [ml2]
            type_drivers = vxlan,flat
            tenant_network_types = vxlan
            mechanism_drivers =
            extension_drivers =
            [ml2_type_vxlan]
            vni_ranges = 1:999
            """)
            + _authtoken(ks, "neutron", password)
        )
        self._say("neutron: creating its database")
        # Neutron's migrations need MySQL/PostgreSQL: build the schema from the models, stamp the heads.
        script = textwrap.dedent(f"""\
            import sqlalchemy as sa
            from neutron.db.migration.models import head
            engine = sa.create_engine("sqlite:///{d}/neutron.db")
            head.get_metadata().create_all(engine)
            """)
        py = str(venvs / "neutron" / "bin" / "python")
        self._run("neutron", [py, "-c", script])
        manage = str(venvs / "neutron" / "bin" / "neutron-db-manage")
        self._run("neutron", [manage, "--config-file", str(conf), "stamp", "heads"])
        return conf

    def _venvs_path(self) -> Path:
        assert self._venvs is not None
        return self._venvs

    def _shim(self, name: str, conf: Path) -> Path:
        folder = conf.parent if name != "placement" else conf.parent.parent
        env, module = {
            "keystone": (f'os.environ.setdefault("OS_KEYSTONE_CONFIG_FILES", "{conf}")', "keystone.wsgi.api"),
            "placement": (f'os.environ.setdefault("OS_PLACEMENT_CONFIG_DIR", "{conf.parent}")', "placement.wsgi.api"),
            "neutron": (
                f'os.environ.setdefault("OS_NEUTRON_CONFIG_DIR", "{conf.parent}")\n'
                f'os.environ.setdefault("OS_NEUTRON_CONFIG_FILES", "{conf.name}")',
                "neutron.wsgi.api",
            ),
        }[name]
        shim = folder / f"{name}_wsgi.py"
        # oslo.config would otherwise parse gunicorn's own command line (and exit 2).
        shim.write_text(f"import os, sys\n{env}\nsys.argv = sys.argv[:1]\nfrom {module} import application  # noqa\n")
        return shim

    def _spawn(self, name: str, venvs: Path, conf: Path) -> _Proc:
        shim = self._shim(name, conf)
        p = _Proc(name, shim.parent)
        self._procs[name] = p
        self._say(f"{name}: starting gunicorn")
        gunicorn = str(venvs / name / "bin" / "gunicorn")
        argv = [gunicorn, "--chdir", str(shim.parent), "-b", "127.0.0.1:0", "-w", "1", "--timeout", "120"]
        # Every request with its duration in the log, so a slow answer in a failed test shows where.
        argv += ["--access-logfile", "-", "--access-logformat", '%(t)s "%(r)s" %(s)s %(M)sms']
        # The log is appended to: read the port only from what this process writes.
        offset = p.log.stat().st_size if p.log.exists() else 0
        with p.log.open("ab") as log:
            p.proc = subprocess.Popen(
                [*argv, f"{shim.stem}:application"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
        self._record_pids()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with p.log.open("rb") as fh:
                fh.seek(offset)
                m = _LISTENING.search(fh.read().decode(errors="replace"))
            if m:
                p.url = f"http://127.0.0.1:{m.group(1)}"
                return p
            self._check_alive(p, deadline)
            time.sleep(0.1)

    def _check_alive(self, p: _Proc, deadline: float) -> None:
        assert p.proc is not None
        if p.proc.poll() is not None:
            raise ServicesError(f"{p.name} exited with {p.proc.returncode}:\n{self.logs()}")
        if time.monotonic() > deadline:
            raise ServicesError(f"{p.name} did not come up within {START_TIMEOUT_S:g} s:\n{self.logs()}")

    def _wait_http(self, p: _Proc, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(p.url + path, timeout=30):  # noqa: S310 - loopback http
                    return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return  # 300 (version list) or 401: the app answers
            except OSError:
                pass
            self._check_alive(p, deadline)
            time.sleep(0.2)

    def _record_pids(self) -> None:
        pids = {n: p.proc.pid for n, p in self._procs.items() if p.proc is not None}
        (self.run_dir / "pids.json").write_text(json.dumps(pids) + "\n")

    def _register(self, ks: _Proc, admin_pw: str, passwords: Mapping[str, str], pl: _Proc, nt: _Proc) -> None:
        """Service users, the broker's account (admin in project ``fedbroker``) and the catalog."""
        import openstack

        conn = openstack.connect(
            auth_url=ks.url + "/v3",
            username="admin",
            password=admin_pw,
            project_name="admin",
            user_domain_name="Default",
            project_domain_name="Default",
            region_name=REGION,
        )
        try:
            ident: Any = conn.identity  # typed as v2 | v3; Keystone here speaks v3 only
            domain = ident.find_domain("default")
            admin_role = ident.find_role("admin")
            service = ident.create_project(name="service", domain_id=domain.id)
            fed = ident.create_project(name="fedbroker", domain_id=domain.id)
            for name, project in (("placement", service), ("neutron", service), ("fedbroker", fed)):
                user = ident.create_user(name=name, password=passwords[name], domain_id=domain.id)
                ident.assign_project_role_to_user(project, user, admin_role)
            for name, kind, proc in (("placement", "placement", pl), ("neutron", "network", nt)):
                svc = ident.create_service(name=name, type=kind)
                for interface in ("public", "internal"):
                    ident.create_endpoint(service_id=svc.id, interface=interface, url=proc.url, region_id=REGION)
        finally:
            conn.close()

    @staticmethod
    def _write_clouds(info: CloudInfo, path: Path) -> None:
        admin = {**info.auth(), "username": "admin", "password": info.admin_password, "project_name": "admin"}

        def cloud(auth: Mapping[str, str]) -> dict[str, object]:
            a = dict(auth)
            return {"auth": {k: v for k, v in a.items() if k != "region_name"}, "region_name": REGION}

        path.write_text(yaml.safe_dump({"clouds": {CLOUD: cloud(info.auth()), ADMIN_CLOUD: cloud(admin)}}))
        path.chmod(0o600)


def _authtoken(ks: _Proc, user: str, password: str) -> str:
    """keystonemiddleware's section: how a service checks tokens, logging in as its own user."""
    return (
        f"[keystone_authtoken]\nwww_authenticate_uri = {ks.url}/v3\nauth_url = {ks.url}/v3\nauth_type = password\n"
        "project_domain_name = Default\nuser_domain_name = Default\nproject_name = service\n"
        f"username = {user}\npassword = {password}\nmemcached_servers =\n"
    )


def read_info(run_dir: Path) -> CloudInfo | None:
    """The services recorded in ``run_dir``, when their processes still run; else None."""
    try:
        info = CloudInfo(**json.loads((run_dir / "services.json").read_text()))
        pids = json.loads((run_dir / "pids.json").read_text())
    except (OSError, ValueError, TypeError):
        return None
    for pid in pids.values():
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, PermissionError, ValueError):
            return None
    return info


def stop_recorded(run_dir: Path) -> bool:
    """Stop services started earlier in ``run_dir`` by another process (``fedbroker openstack down``)."""
    try:
        pids = json.loads((run_dir / "pids.json").read_text())
    except (OSError, ValueError):
        return False
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in pids.values():
        while time.monotonic() < deadline:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)
    for name in ("pids.json", "services.json"):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    return True


# --- ``fedbroker openstack up|down|status`` ----------------------------------------------------------


def main(argv: list[str]) -> int:
    """``up|down|status|install [--dir DIR]``: install (cached) and keep the services running."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="fedbroker openstack", description="real Keystone, Placement and Neutron on loopback"
    )
    parser.add_argument("action", choices=["up", "down", "status", "install"])
    parser.add_argument(
        "--dir", type=Path, default=None, help="run folder (default $FEDBROKER_OPENSTACK_RUN or the cache's run/)"
    )
    ns = parser.parse_args(argv)
    if ns.action == "install":
        try:
            with _progress("checking the installed services") as say:
                base = install(say=say)
            print(f"installed in {base}")
        except ServicesError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    run_dir: Path = ns.dir or default_run_dir()
    info = read_info(run_dir)
    if ns.action == "down":
        stopped = stop_recorded(run_dir)
        print("stopped" if stopped else f"nothing recorded as running in {run_dir}")
        return 0
    if ns.action == "up" and info is None:
        stop_recorded(run_dir)  # a half-dead earlier run
        try:
            with _progress(f"starting Keystone, Placement and Neutron in {run_dir}") as say:
                info = LoopbackCloud(run_dir, say=say).start()
        except ServicesError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if info is None:
        print(f"not running (start with: fedbroker openstack up{f' --dir {ns.dir}' if ns.dir else ''})")
        return 3
    print(f"Keystone  {info.keystone_url}\nPlacement {info.placement_url}\nNeutron   {info.neutron_url}")
    print(f"clouds.yaml {info.clouds_file} (clouds '{CLOUD}' for the broker, '{ADMIN_CLOUD}' for the admin)")
    print(f"export OS_CLIENT_CONFIG_FILE={info.clouds_file}")
    return 0


@contextlib.contextmanager
def _progress(first: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the current step and the time so far (on a terminal), and one line per step on stderr."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    t0 = time.monotonic()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task(first)

        def say(text: str) -> None:
            bar.console.print(f"[dim]{time.monotonic() - t0:5.1f} s[/] {text}", highlight=False)
            bar.update(task, description=text)

        say(first)
        yield say
