"""The task engine: steps run in order, tasks of a step concurrently, failures compensate."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from broker.core.workflow import Schedule, Task, TaskStatus, run_schedule
from slicing.errors import ErrorCode, FanoutError, FedError, ResourceExhausted, Unavailable


class Log:
    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str]] = []
        self.batches: list[list[tuple[int, str, str]]] = []

    def __call__(self, entries: Sequence[TaskStatus]) -> None:
        batch = [(e.seq, e.name, e.status) for e in entries]
        self.batches.append(batch)
        self.rows.extend(batch)


def recorder(events: list[str], name: str, fail: FedError | None = None, delay: float = 0.0) -> Task:
    async def run() -> None:
        await asyncio.sleep(delay)
        if fail is not None:
            raise fail
        events.append(f"run {name}")

    async def undo() -> None:
        events.append(f"undo {name}")

    return Task(name, run, undo, domain=name)


async def test_schedule_runs_steps_in_order_and_logs_each_task() -> None:
    events: list[str] = []
    log = Log()
    sched = Schedule("op").add_step([recorder(events, "a")]).add_step([recorder(events, "b")])
    await run_schedule(sched, log)
    assert events == ["run a", "run b"]
    assert (0, "a", "running") in log.rows and (0, "a", "done") in log.rows and (1, "b", "done") in log.rows


async def test_statuses_of_one_step_are_logged_together_before_and_after_its_tasks_run() -> None:
    events: list[str] = []
    log = Log()

    async def check_logged() -> None:
        # By the time a task runs, every task of its step is already logged as running.
        events.append(f"logged {sorted(log.rows)}")

    sched = Schedule("op").add_step([Task("a", check_logged), Task("b", check_logged)])
    await run_schedule(sched, log)
    assert log.batches == [[(0, "a", "running"), (0, "b", "running")], [(0, "a", "done"), (0, "b", "done")]]
    assert events == [f"logged {[(0, 'a', 'running'), (0, 'b', 'running')]}"] * 2


async def test_failed_step_compensates_done_tasks_in_reverse_and_names_the_domain() -> None:
    events: list[str] = []
    sched = (
        Schedule("op")
        .add_step([recorder(events, "a"), recorder(events, "b")])
        .add_step([recorder(events, "c", fail=ResourceExhausted("no labels left"))])
    )
    with pytest.raises(ResourceExhausted) as info:
        await run_schedule(sched, Log())
    assert info.value.domain == "c"
    assert events[:2] == ["run a", "run b"]
    assert events[2:] == ["undo b", "undo a"]


async def test_all_tasks_of_a_failing_step_finish_before_compensation() -> None:
    events: list[str] = []
    sched = Schedule("op").add_step(
        [recorder(events, "slow", delay=0.05), recorder(events, "bad", fail=Unavailable("down"))]
    )
    with pytest.raises(Unavailable):
        await run_schedule(sched, Log())
    # the slow reservation completed, then was undone: nothing was cancelled half-way
    assert events == ["run slow", "undo slow"]


async def test_several_failures_become_one_fanout_error_naming_each_domain() -> None:
    sched = Schedule("op").add_step(
        [
            recorder([], "x", fail=ResourceExhausted("full")),
            recorder([], "y", fail=Unavailable("down")),
        ]
    )
    with pytest.raises(FanoutError) as info:
        await run_schedule(sched, Log())
    assert info.value.code is ErrorCode.UNAVAILABLE  # the more telling code wins
    assert "[x]" in str(info.value) and "[y]" in str(info.value)


async def test_unexpected_exception_becomes_internal_error_with_task_name() -> None:
    async def boom() -> None:
        raise RuntimeError("bug")

    with pytest.raises(FedError) as info:
        await run_schedule(Schedule("op").add_step([Task("t1", boom)]), Log())
    assert info.value.code is ErrorCode.INTERNAL and "t1" in str(info.value)


async def test_best_effort_schedule_runs_every_step_and_reports_all_failures() -> None:
    events: list[str] = []
    sched = Schedule("teardown", best_effort=True)
    sched.add_step([recorder(events, "a", fail=Unavailable("down"))]).add_step([recorder(events, "b")])
    with pytest.raises(Unavailable):
        await run_schedule(sched, Log())
    assert events == ["run b"]  # no compensation in best-effort teardown


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(run_schedule(Schedule("op").add_step([Task("h", hang)]), Log()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_schedule_can_be_extended_without_touching_the_engine() -> None:
    events: list[str] = []
    sched = Schedule("op").add_step([recorder(events, "a")]).add_step([recorder(events, "c")])
    sched.insert_step(1, [recorder(events, "b")])
    sched.replace_task("c", recorder(events, "c2"))
    assert [[t.name for t in step] for step in sched.steps] == [["a"], ["b"], ["c2"]]
    with pytest.raises(KeyError):
        sched.replace_task("missing", recorder(events, "z"))
