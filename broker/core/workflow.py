"""Lifecycle operations as schedules of small tasks, each with its compensation.

A schedule is an ordered list of steps; the tasks of one step run concurrently and all run to the
end (a reservation in flight is never cancelled half-way: it would leave a hold behind). When a
step fails, the tasks done so far are compensated in reverse order and one error naming every
failing task's domain is raised. ``best_effort`` schedules (teardown) run every step regardless
and report all failures at the end. Each task's status is logged before and after it runs, so a
later version can resume or compensate a schedule after a crash; the statuses of one step's tasks
are handed over together, so the store writes them in one transaction rather than one per task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from slicing.errors import FanoutError, FedError, Internal

log = logging.getLogger(__name__)

Action = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Task:
    """One small unit of a lifecycle operation, with what undoes it."""

    name: str
    run: Action
    compensate: Action | None = None
    domain: str = ""


@dataclass
class Schedule:
    """An ordered list of steps; a step is a group of tasks that run concurrently."""

    operation: str
    steps: list[list[Task]] = field(default_factory=list)
    best_effort: bool = False

    def add_step(self, tasks: Sequence[Task]) -> Schedule:
        """Append a step (an empty one is skipped)."""
        if tasks:
            self.steps.append(list(tasks))
        return self

    def insert_step(self, index: int, tasks: Sequence[Task]) -> Schedule:
        """Insert a step before ``index``: services extend schedules without touching the engine."""
        self.steps.insert(index, list(tasks))
        return self

    def replace_task(self, name: str, task: Task) -> Schedule:
        """Replace the task called ``name`` wherever it is."""
        for step in self.steps:
            for i, t in enumerate(step):
                if t.name == name:
                    step[i] = task
                    return self
        raise KeyError(name)


@dataclass(frozen=True)
class TaskStatus:
    """One line of a slice's task log: a task of a schedule step and where it stands."""

    seq: int
    name: str
    status: str
    detail: str = ""


#: Where task statuses go (the store, in the broker): each call's statuses are written together.
TaskLog = Callable[[Sequence[TaskStatus]], None]


def _as_fed_error(task: Task, exc: BaseException) -> FedError:
    if isinstance(exc, FedError):
        return exc.in_domain(task.domain) if task.domain else exc
    return Internal(f"task {task.name} failed: {type(exc).__name__}: {exc}", domain=task.domain)


async def _run_step(step: Sequence[Task], seq: int, record: TaskLog) -> tuple[list[Task], list[FedError]]:
    record([TaskStatus(seq, t.name, "running") for t in step])
    results = await asyncio.gather(*(t.run() for t in step), return_exceptions=True)
    done: list[Task] = []
    errors: list[FedError] = []
    statuses: list[TaskStatus] = []
    for t, res in zip(step, results, strict=True):
        if isinstance(res, asyncio.CancelledError):
            raise res
        if isinstance(res, BaseException):
            if not isinstance(res, Exception):
                raise res
            err = _as_fed_error(t, res)
            if not isinstance(res, FedError):
                log.error("task %s raised an unexpected error", t.name, exc_info=res)
            errors.append(err)
            statuses.append(TaskStatus(seq, t.name, "failed", str(err)))
        else:
            done.append(t)
            statuses.append(TaskStatus(seq, t.name, "done"))
    record(statuses)
    return done, errors


async def compensate(done: Sequence[tuple[int, Task]], record: TaskLog) -> list[FedError]:
    """Undo ``done`` tasks in reverse order; return the errors of compensations that failed."""
    failures: list[FedError] = []
    for seq, t in reversed(done):
        if t.compensate is None:
            continue
        try:
            await t.compensate()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed compensation must not hide the original error
            err = _as_fed_error(t, exc)
            log.warning("compensation of %s failed: %s (its hold expires on its own)", t.name, err)
            record([TaskStatus(seq, t.name, "compensation-failed", str(err))])
            failures.append(err)
        else:
            record([TaskStatus(seq, t.name, "compensated")])
    return failures


def _one_error(errors: Sequence[FedError]) -> FedError:
    return errors[0] if len(errors) == 1 else FanoutError(errors)


async def run_schedule(schedule: Schedule, record: TaskLog) -> None:
    """Run every step; on failure compensate what was done and raise one error naming each failure."""
    done: list[tuple[int, Task]] = []
    all_errors: list[FedError] = []
    for seq, step in enumerate(schedule.steps):
        ok, errors = await _run_step(step, seq, record)
        done.extend((seq, t) for t in ok)
        if errors and not schedule.best_effort:
            await compensate(done, record)
            raise _one_error(errors)
        all_errors.extend(errors)
    if all_errors:
        raise _one_error(all_errors)
