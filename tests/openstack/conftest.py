"""Real Keystone, Placement and Neutron on loopback for the ``openstack`` tests, once per session.

The services install into venvs cached under ``~/.cache/fedbroker-openstack`` (the first run
downloads them from PyPI), start on ephemeral loopback ports with SQLite in a temporary folder,
and stop after the session. When they cannot be installed or started the tests skip, unless
``FEDBROKER_REQUIRE_OPENSTACK=1`` (CI), which makes them fail with the services' logs.

``FEDBROKER_OPENSTACK_RUN=DIR`` reuses services already running from ``fedbroker openstack up``
in DIR instead of starting new ones (quicker while iterating). When none run there the session
stops with an error naming DIR and the command that starts them: asked to reuse, skipping every
test would read as a pass. ``FEDBROKER_OPENSTACK_ALLOW_SKIP=1`` makes them skip instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack
import openstack.config
import openstack.connection
import openstack.warnings
import pytest

from scenarios.openstack_install import ServicesError
from scenarios.openstack_services import ADMIN_CLOUD, CloudInfo, LoopbackCloud, read_info
from tests.conftest import require_or_skip
from tests.openstack.helpers import DOMAINS, domain_spec, purge

_VNI_BLOCKS = itertools.count()
#: The first test of the session also waits for the services to install (first run) and start.
OPENSTACK_TEST_TIMEOUT_S = 420


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give tests against the real services a timeout that covers installing and starting them."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(OPENSTACK_TEST_TIMEOUT_S))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failed test against the services shows the tail of their request logs (with durations)."""
    report: pytest.TestReport = yield
    info = getattr(item, "funcargs", {}).get("loopback_cloud")
    if report.failed and isinstance(info, CloudInfo):
        for log in sorted(Path(info.run_dir).rglob("gunicorn.log")):
            service = log.relative_to(info.run_dir).parts[0]
            lines = log.read_text(errors="replace").splitlines()[-25:]
            report.sections.append((f"OpenStack {service} requests (last 25)", "\n".join(lines)))
    return report


def _sayer(config: pytest.Config) -> Callable[[str], None]:
    """Print past pytest's capture, so ``make test`` shows when it installs and starts the services."""
    capture: Any = config.pluginmanager.getplugin("capturemanager")

    def say(text: str) -> None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            print(f"\n[openstack] {text}", file=sys.stderr, flush=True)

    return say


def reuse_refusal(run_dir: str) -> str:
    """Why a session asked to reuse services in ``run_dir`` stops when none run there."""
    return (
        f"FEDBROKER_OPENSTACK_RUN={run_dir}, but no OpenStack services run in {run_dir}. Start them with\n"
        f"    .venv/bin/fedbroker openstack up --dir {run_dir}\n"
        "or unset FEDBROKER_OPENSTACK_RUN to start fresh ones for this session "
        "(FEDBROKER_OPENSTACK_ALLOW_SKIP=1 skips the openstack tests instead)"
    )


@pytest.fixture(scope="session")
def loopback_cloud(pytestconfig: pytest.Config) -> Iterator[CloudInfo]:
    """The running services (started here, or reused from ``FEDBROKER_OPENSTACK_RUN``)."""
    reuse = os.environ.get("FEDBROKER_OPENSTACK_RUN")
    if reuse:
        info = read_info(Path(reuse))
        if info is None:
            if os.environ.get("FEDBROKER_OPENSTACK_ALLOW_SKIP") == "1":
                pytest.skip(f"no OpenStack services running in {reuse}")
            pytest.exit(reuse_refusal(reuse), returncode=pytest.ExitCode.USAGE_ERROR)
        yield info
        return
    say = _sayer(pytestconfig)
    with tempfile.TemporaryDirectory(prefix="fedbroker-openstack-") as run_dir:
        say(f"starting Keystone, Placement and Neutron for this session (about 35 s) in {run_dir}")
        cloud = LoopbackCloud(Path(run_dir), say=say)
        try:
            info = cloud.start()
        except (ServicesError, OSError) as exc:
            require_or_skip("FEDBROKER_REQUIRE_OPENSTACK", False, f"OpenStack services unavailable: {exc}")
            raise  # unreachable: require_or_skip skipped or failed
        try:
            yield info
        finally:
            cloud.stop()


@pytest.fixture(scope="session")
def admin(loopback_cloud: CloudInfo) -> Iterator[openstack.connection.Connection]:
    """An admin connection, for asserting on Placement and Neutron directly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", openstack.warnings.RemovedInSDK60Warning)
        cfg = openstack.config.OpenStackConfig(config_files=[loopback_cloud.clouds_file])
        conn = openstack.connection.Connection(config=cfg.get_one(cloud=ADMIN_CLOUD))
    yield conn
    conn.close()


@pytest.fixture
def vni_block() -> int:
    """The first VNI of a block of 100 no other test of this session uses (Neutron's VNIs are global)."""
    return 100_000 + 100 * next(_VNI_BLOCKS)


@pytest.fixture
def sp(admin: openstack.connection.Connection) -> Iterator[str]:
    """A fresh domain id; whatever the test leaves of it in OpenStack is removed afterwards."""
    name = f"OS{next(DOMAINS)}-{int(time.time() * 1000) % 1_000_000}"
    yield name
    purge(admin, name)


@pytest.fixture
def spec(loopback_cloud: CloudInfo, sp: str, vni_block: int) -> dict[str, Any]:
    return domain_spec(loopback_cloud, sp, vni_block)
