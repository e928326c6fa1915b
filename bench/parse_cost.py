"""What reading descriptors costs: parsing a large note and domain config, importing the broker, starting one.

``python -m bench.parse_cost`` prints one JSON object (medians of several runs, in milliseconds; CPU
time beside wall time, since on a shared machine the wall time mostly measures the neighbours):

* ``note_parse_ms``: ``parse_note`` over an authored note of 1,000 endpoints, 1,000 border ports,
  1,000 transit entries and 100 hosting entries;
* ``domain_parse_ms``: ``EmulatedDomainConfig.from_dict`` over a domain of 300 pops, 600 links,
  1,000 endpoints, 1,000 ports and 300 function entries;
* ``import_broker_app_ms``: a fresh interpreter importing ``broker.app`` (what ``serve`` loads);
* ``serve_to_listen_ms``: ``fedbroker serve --insecure`` of a one-domain leaf until it listens.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

N = 1000


def big_note() -> dict[str, Any]:
    """An authored note with ``N`` endpoints, ports and transit entries."""
    return {
        "sp_id": "BIG",
        "version": 1,
        "endpoints": [{"id": f"BIG.e{i}", "region": "r", "location": "x", "capacity_mbps": 1000} for i in range(N)],
        "border_ports": [
            {
                "id": f"BIG.p{i}",
                "peer_sp": f"P{i}",
                "peer_port": f"P{i}.to-BIG",
                "label_type": "vxlan-vni",
                "label_ranges": [f"{1000 + i * 10}-{1009 + i * 10}"],
                "local_label_ranges": [f"{200000 + i}"],
                "capacity_mbps": 1000,
                "latency_ms": 0.5,
            }
            for i in range(N)
        ],
        "transit": [{"a": f"BIG.e{i}", "b": f"BIG.p{i}", "latency_ms": 1.5, "bandwidth_mbps": 1000} for i in range(N)],
        "hosting": [
            {"type": f"f{i % 10}", "site": f"s{i}", "instances": 2, "throughput_mbps": 100} for i in range(100)
        ],
        "qos_classes": [{"name": f"q{i}", "native": {"dscp": i}, "delay_ms": i, "loss": 0.001} for i in range(10)],
        "isolation": ["shared", "vxlan"],
        "address_pools": [f"10.{i}.0.0/16" for i in range(100)],
    }


def big_domain() -> dict[str, Any]:
    """An emulated domain config of 300 pops and ``N`` endpoints and ports."""
    pops = [f"p{i}" for i in range(300)]
    return {
        "id": "BIG",
        "type": "emulated",
        "pops": pops,
        "links": [
            {"a": pops[i], "b": pops[(i + k) % 300], "bandwidth_mbps": 10000, "latency_ms": 1.0}
            for i in range(300)
            for k in (1, 2)
        ],
        "endpoints": [
            {"id": f"BIG.e{i}", "pop": pops[i % 300], "region": "r", "capacity_mbps": 1000} for i in range(N)
        ],
        "ports": [
            {
                "id": f"BIG.p{i}",
                "pop": pops[i % 300],
                "peer_sp": f"P{i}",
                "peer_port": f"P{i}.to-BIG",
                "label_type": "vxlan-vni",
                "labels": [f"{1000 + i * 10}-{1009 + i * 10}"],
                "capacity_mbps": 1000,
            }
            for i in range(N)
        ],
        "functions": [{"pop": pops[i], "type": "nat", "slots": 2} for i in range(300)],
    }


def _median_ms(fn: Callable[[], object], runs: int, clock: Callable[[], float] = time.perf_counter) -> float:
    times = []
    for _ in range(runs):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1000)
    return round(statistics.median(times), 1)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def serve_to_listen_ms(runs: int = 5) -> tuple[float, float]:
    """Median wall and CPU time from starting ``fedbroker serve`` of a small leaf to its address file appearing."""
    fedbroker = Path(sys.executable).with_name("fedbroker")
    times = []
    cpu = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="fedbroker-parse-cost-") as tmp:
            folder = Path(tmp)
            (folder / "accounts.yaml").write_text("accounts: []\n")
            domain = big_domain()
            domain.update(pops=domain["pops"][:2], links=[], endpoints=domain["endpoints"][:2], ports=[], functions=[])
            config = {
                "sp_id": "BIG",
                "listen": "127.0.0.1:0",
                "data_dir": "data",
                "security": {"accounts_file": "accounts.yaml"},
                "domains": [domain],
            }
            (folder / "broker.yaml").write_text(yaml.safe_dump(config))
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [str(fedbroker), "serve", "--config", str(folder / "broker.yaml"), "--insecure"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                while not (folder / "data" / "address").exists():
                    if proc.poll() is not None or time.perf_counter() - t0 > 60:
                        raise RuntimeError(f"serve exited with {proc.returncode} before listening")
                    time.sleep(0.005)
                times.append((time.perf_counter() - t0) * 1000)
                cpu.append(_proc_cpu_ms(proc.pid))
            finally:
                proc.terminate()
                proc.wait(timeout=20)
    return round(statistics.median(times), 1), round(statistics.median(cpu), 1)


def import_ms(module: str, runs: int = 5) -> tuple[float, float]:
    """Median wall and CPU time of a fresh interpreter importing ``module``."""

    def once() -> None:
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)

    return _median_ms(once, runs), _median_ms(once, runs, clock=_children_cpu_s)


def main() -> None:
    """Measure and print the figures as one JSON object."""
    from domain_agents.emulated_config import EmulatedDomainConfig
    from schemas.note import parse_note

    note, domain = big_note(), big_domain()
    parsed, problems = parse_note(note, 0.0)
    assert parsed is not None, problems[:3]
    EmulatedDomainConfig.from_dict(domain, "domains[0]")
    imported, serving = import_ms("broker.app"), serve_to_listen_ms()
    figures = {
        "note_parse_cpu_ms": _median_ms(lambda: parse_note(note, 0.0), 7, clock=time.process_time),
        "domain_parse_cpu_ms": _median_ms(
            lambda: EmulatedDomainConfig.from_dict(domain, "domains[0]"), 7, clock=time.process_time
        ),
        "import_broker_app_ms": imported[0],
        "import_broker_app_cpu_ms": imported[1],
        "serve_to_listen_ms": serving[0],
        "serve_to_listen_cpu_ms": serving[1],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
