"""Round trips counted, not computed: the north–south calls the brokers of a fleet answered.

Every broker started with ``metrics_listen`` counts each call it answers (``fedbroker_rpcs`` on its
``/metrics``, by method and code). Summed over every broker of a federation, the difference across a
run is the number of round trips the run made at every level: the customer's to the top, each
upper's to its lower SPs.
"""

from __future__ import annotations

from collections import Counter

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from scenarios.processes import Fleet

#: The calls that move a slice through its lifecycle (streams, reads and anti-entropy's List are not counted).
LIFECYCLE = ("Reserve", "Commit", "Activate", "CommitAndActivate", "Abort", "Deactivate", "Terminate")
#: What a broker serves ``/metrics`` on in a benchmark or test federation.
METRICS = {"metrics_listen": "127.0.0.1:0"}


async def answered(fleet: Fleet) -> Counter[str]:
    """Calls answered so far by every running broker of ``fleet`` that serves metrics, by method, summed."""
    total: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for broker in fleet.brokers.values():
            where = broker.data_dir / "metrics_address"
            if not broker.running() or not where.exists():
                continue
            async with http.get(f"http://{where.read_text().strip()}/metrics") as resp:
                resp.raise_for_status()
                text = await resp.text()
            for family in text_string_to_metric_families(text):
                if family.name != "fedbroker_rpcs":
                    continue
                for sample in family.samples:
                    if sample.name == "fedbroker_rpcs_total":
                        total[sample.labels["method"]] += int(sample.value)
    return total


def lifecycle_calls(before: Counter[str], after: Counter[str]) -> Counter[str]:
    """The lifecycle calls answered between two readings of ``answered``, by method (zeros left out)."""
    return Counter({m: after[m] - before[m] for m in LIFECYCLE if after[m] - before[m]})
