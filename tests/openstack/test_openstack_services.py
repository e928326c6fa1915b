"""``fedbroker openstack up|down`` run after run, and the reuse of a run folder by the test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scenarios.openstack_services import read_info
from tests.openstack.conftest import reuse_refusal

ROOT = Path(__file__).resolve().parents[2]
FEDBROKER = Path(sys.executable).with_name("fedbroker")
_ENV_KEYS = ("FEDBROKER_OPENSTACK_RUN", "FEDBROKER_OPENSTACK_ALLOW_SKIP", "FEDBROKER_REQUIRE_OPENSTACK")


def _env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in _ENV_KEYS}, **extra}


def _openstack(action: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FEDBROKER), "openstack", action, "--dir", str(run_dir)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        check=False,
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


@pytest.mark.openstack
@pytest.mark.timeout(420)
def test_openstack_up_down_up_starts_working_services_each_time_and_shows_progress(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    try:
        urls = []
        for attempt in (1, 2):
            up = _openstack("up", run_dir)
            assert up.returncode == 0, f"up #{attempt}:\n{up.stdout}\n{up.stderr}"
            info = read_info(run_dir)
            assert info is not None, f"up #{attempt} recorded nothing running"
            assert info.keystone_url in up.stdout
            # The progress lines, one per step (on a terminal they drive a spinner).
            for step in ("keystone: starting gunicorn", "neutron: waiting for its first answer"):
                assert step in up.stderr, up.stderr
            # The second start reads its own port, not the first run's line of the appended log.
            services = json.loads((run_dir / "services.json").read_text())
            for key in ("keystone_url", "placement_url", "neutron_url"):
                assert _answers(services[key]), f"up #{attempt}: {key} {services[key]} does not answer"
            urls.append(info.keystone_url)
            if attempt == 1:
                down = _openstack("down", run_dir)
                assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
                assert read_info(run_dir) is None
                assert not _answers(urls[0])
        log = (run_dir / "keystone" / "gunicorn.log").read_text()
        assert log.count("Listening at") == 1, "each up starts with a fresh service folder"
    finally:
        _openstack("down", run_dir)


def _reuse_session(run_dir: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/openstack/test_openstack_agent.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(FEDBROKER_OPENSTACK_RUN=str(run_dir), **extra),
        timeout=120,
        check=False,
    )


def test_reusing_a_folder_where_no_services_run_fails_naming_the_folder_and_the_command(tmp_path: Path) -> None:
    proc = _reuse_session(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert reuse_refusal(str(tmp_path)).splitlines()[0] in out
    assert f"fedbroker openstack up --dir {tmp_path}" in out
    assert " passed" not in out and " skipped" not in out


def test_reusing_a_folder_where_no_services_run_skips_when_allowed(tmp_path: Path) -> None:
    proc = _reuse_session(tmp_path, FEDBROKER_OPENSTACK_ALLOW_SKIP="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped" in proc.stdout
