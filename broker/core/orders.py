"""Service orders (the TMF641 shape of the REST API): one slice each, carried to what the order asked.

An order is placed by a Reserve, the same core call as gRPC's, under the order's idempotency key
(its ``externalId``, the slice's ``request_id``): the same key with the same request is the same
order, with a different request ``AlreadyExists``. From there the desk follows the slice's events
and takes the next step itself: a held slice is committed and activated (one step per child), a
committed one activated, until the slice is ACTIVE (or, for a hold-only order, HELD) and the order
completed. What the slice cannot tell (the order asked only for a hold, was cancelled, had
completed before the slice ended) is kept in the store beside it, written before the Reserve, so a
restarted broker goes on where it stopped: ``run`` resumes every order whose slice waits for its next step.

An order's state is read from its slice through one table (``order_state``):

A delete order terminates a slice that exists (TMF641's ``delete`` action): it is inProgress
until the slice has ended, then completed, and it cannot be cancelled (a release is not undone).

==================  =======================================================================
acknowledged        the slice is being reserved (or no slice was recorded yet)
inProgress          held, committing, committed, activating (a full order), or being released
completed           the slice reached what the order asked (stays completed after it ends)
failed              the slice ended before that, with the slice's reason
pendingCancellation the requester cancelled it; the slice is being released
cancelled           cancelled, and the slice released
==================  =======================================================================
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from broker.core.events import until_set
from broker.core.lifecycle import SliceManager
from broker.core.records import OrderRecord, SliceRecord
from broker.core.storage import SliceStore, StoreConflict
from domain_agents.base import NotActivated
from slicing.errors import AlreadyExists, FailedPrecondition, FedError, InvalidArgument, NotFound
from slicing.model import SliceRequest, SliceState

log = logging.getLogger(__name__)
S = SliceState
#: Where a slice ends: nothing more happens to it.
ENDED = frozenset({S.TERMINATED, S.ABORTED, S.EXPIRED, S.FAILED})
#: The slice states that complete an order, by whether it asked only for a hold.
TARGET: dict[bool, frozenset[SliceState]] = {
    False: frozenset({S.ACTIVE}),
    True: frozenset({S.HELD, S.COMMITTING, S.COMMITTED, S.ACTIVATING, S.ACTIVE}),
}
#: The most orders one list reads (newest first) before it filters and pages.
MAX_SCAN = 10_000


class OrderState(StrEnum):
    """TMF641 v4 states a service order of this broker takes."""

    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "inProgress"
    COMPLETED = "completed"
    FAILED = "failed"
    PENDING_CANCELLATION = "pendingCancellation"
    CANCELLED = "cancelled"


#: States an order does not leave.
FINAL_ORDER_STATES = frozenset({OrderState.COMPLETED, OrderState.FAILED, OrderState.CANCELLED})


@dataclass(frozen=True)
class OrderView:
    """An order with its slice (None: no slice was recorded for it) and the state read from both."""

    order: OrderRecord
    slice: SliceRecord | None
    state: OrderState
    reason: str = ""


def order_state(order: OrderRecord, rec: SliceRecord | None) -> tuple[OrderState, str]:
    """The order's state and its reason, read from its slice (the table in this module's docstring)."""
    if order.delete_slice:
        if rec is None or rec.state in ENDED:
            return OrderState.COMPLETED, ""
        return OrderState.IN_PROGRESS, f"slice {rec.id} is {rec.state}"
    if order.completed_at:
        return OrderState.COMPLETED, ""
    if rec is None:
        if order.cancelled_at:
            return OrderState.CANCELLED, "cancelled by its requester"
        return OrderState.ACKNOWLEDGED, "no slice recorded yet; post the order again with the same externalId"
    if order.cancelled_at:
        if rec.state in ENDED:
            return OrderState.CANCELLED, "cancelled by its requester"
        return OrderState.PENDING_CANCELLATION, f"slice {rec.id} is {rec.state}"
    if rec.state in TARGET[order.hold_only]:
        return OrderState.COMPLETED, ""
    if rec.state is S.RESERVING:
        return OrderState.ACKNOWLEDGED, ""
    if rec.state in ENDED:
        return OrderState.FAILED, rec.reason or f"the slice ended {rec.state}"
    return OrderState.IN_PROGRESS, rec.reason


def _no_such_order(order_id: str) -> NotFound:
    # The same words whether the order never existed or belongs to someone else.
    return NotFound(f"service order '{order_id}' does not exist")


class OrderDesk:
    """Places, reads, cancels and carries forward the service orders of one broker."""

    def __init__(self, manager: SliceManager, store: SliceStore, clock: Callable[[], float]) -> None:
        self._m = manager
        self._store = store
        self._clock = clock
        self._busy: set[str] = set()  # slices with a step of their order in flight
        self._tasks: set[asyncio.Task[None]] = set()

    # --- reads --------------------------------------------------------------------------------

    def view(self, order: OrderRecord) -> OrderView:
        """The order with its slice (for a delete order, the slice it terminates) and state."""
        if order.delete_slice:
            rec = self._store.get(order.delete_slice)
        else:
            rec = self._store.find_by_request(order.requester, order.request_id)
        state, reason = order_state(order, rec)
        return OrderView(order, rec, state, reason)

    def get(self, order_id: str, requester: str | None) -> OrderView:
        """The order ``order_id``, if ``requester`` (None: an operator, who sees all) placed it."""
        order = self._store.order(order_id)
        if order is None or (requester is not None and order.requester != requester):
            raise _no_such_order(order_id)
        return self.view(order)

    def for_slice(self, rec: SliceRecord) -> OrderView | None:
        """The order that placed slice ``rec``, if an order did."""
        order = self._store.order_by_request(rec.requester, rec.request_id)
        if order is None:
            return None
        state, reason = order_state(order, rec)
        return OrderView(order, rec, state, reason)

    def page(
        self,
        requester: str | None,
        *,
        states: Iterable[OrderState] = (),
        external_id: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> list[OrderView]:
        """Orders (of ``requester``; None: everyone's), newest first, in ``states`` if given, paged."""
        wanted = frozenset(states)
        views = (self.view(o) for o in self._store.orders(requester=requester, request_id=external_id, limit=MAX_SCAN))
        out: list[OrderView] = []
        skipped = 0
        for v in views:
            if wanted and v.state not in wanted:
                continue
            if skipped < offset:
                skipped += 1
                continue
            out.append(v)
            if len(out) >= limit:
                break
        return out

    # --- writes -------------------------------------------------------------------------------

    async def place(
        self,
        requester: str,
        external_id: str,
        request: SliceRequest,
        *,
        hold_only: bool = False,
        hold_time_s: float = 0.0,
        description: str = "",
        deadline: float | None = None,
    ) -> OrderView:
        """Reserve the order's slice (the Reserve of gRPC, same replay rules) and let ``run`` carry it on.

        A Reserve the broker refuses after it recorded the slice makes a failed order, with the
        reason (the order exists, as the slice does); one refused before (a bad argument, a key used
        with another request) is raised and leaves no order.
        """
        order, fresh = self._keyed(
            requester, external_id, description=description, hold_only=hold_only, hold_time_s=hold_time_s
        )
        try:
            await self._m.reserve(requester, external_id, request, hold_time_s, deadline=deadline)
        except FedError:
            rec = self._store.find_by_request(requester, external_id)
            if rec is None or rec.request != request:  # refused before a slice was recorded for this request
                if fresh:
                    self._store.drop_order(order.id)
                raise
        view = self.view(order)
        self._next_step(view)
        return view

    async def delete(
        self, requester: str, external_id: str, target: SliceRecord, *, description: str = ""
    ) -> OrderView:
        """Terminate ``target`` (a slice ``requester`` may see) through a delete order, under its idempotency key.

        The same key for the same slice is the same order; for anything else ``AlreadyExists``. A
        slice that has ended already is ``FailedPrecondition`` and leaves no order.
        """
        if target.state in ENDED and self._store.order_by_request(requester, external_id) is None:
            raise FailedPrecondition(
                f"service '{target.id}' has ended already ({target.state}); there is nothing to delete"
            )
        order, _ = self._keyed(requester, external_id, description=description, delete_slice=target.id)
        try:
            await self._m.terminate(target.id)
        except FedError as exc:  # the slice says how far the release got; the reconciler retries the rest
            log.info("delete order %s for slice %s: %s", order.id, target.id, exc)
        return self.view(order)

    def _keyed(
        self,
        requester: str,
        key: str,
        *,
        description: str,
        hold_only: bool = False,
        hold_time_s: float = 0.0,
        delete_slice: str = "",
    ) -> tuple[OrderRecord, bool]:
        """The order kept under ``key`` if it asks the same (a repeat), else a new one saved; and whether it
        is new. The same key with another request is ``AlreadyExists``."""
        if not key:
            raise InvalidArgument("externalId", "must not be empty")
        order = self._store.order_by_request(requester, key)
        if order is not None:
            if (order.hold_only, order.hold_time_s, order.delete_slice) != (hold_only, hold_time_s, delete_slice):
                raise AlreadyExists(f"externalId '{key}' was already used with a different request (order {order.id})")
            return order, False
        wanted = OrderRecord(
            id=uuid.uuid4().hex,
            requester=requester,
            request_id=key,
            created_at=self._clock(),
            hold_only=hold_only,
            hold_time_s=hold_time_s,
            description=description,
            delete_slice=delete_slice,
        )
        try:
            self._store.save_order(wanted)  # before the slice is touched: a restart finds the order's intent
        except StoreConflict:  # another broker process of this SP placed it just now: a repeat
            raise FailedPrecondition(
                f"externalId '{key}' is being placed by another request right now; send it again"
            ) from None
        return wanted, True

    async def cancel(self, order_id: str, requester: str | None) -> OrderView:
        """Cancel an order in progress: its slice is released (gRPC's Terminate), whatever state it is in."""
        view = self.get(order_id, requester)
        if view.order.delete_slice:
            raise FailedPrecondition(
                f"service order '{order_id}' deletes a service; a release cannot be cancelled "
                "(order the service again with action add)"
            )
        if view.state in FINAL_ORDER_STATES:
            raise FailedPrecondition(f"service order '{order_id}' is {view.state}; only an open order can be cancelled")
        order = replace(view.order, cancelled_at=view.order.cancelled_at or self._clock())
        self._store.save_order(order)
        if view.slice is None:
            await self._m.cancel_request(order.requester, order.request_id)
        else:
            await self._m.terminate(view.slice.id)
        return self.view(order)

    # --- carrying orders forward ----------------------------------------------------------------

    def _next_step(self, view: OrderView) -> None:
        """Start the step the order's slice waits for (commit, activate), or record its completion."""
        rec = view.slice
        if rec is None or view.order.cancelled_at or view.order.completed_at or view.order.delete_slice:
            return
        if view.state is OrderState.COMPLETED:
            self._store.save_order(replace(view.order, completed_at=self._clock()))
            return
        # A held slice is committed and activated in one step per child (CommitAndActivate downward).
        step = {S.HELD: self._m.commit_and_activate, S.COMMITTED: self._m.activate}.get(rec.state)
        if step is None or view.order.hold_only or rec.id in self._busy:
            return
        self._busy.add(rec.id)
        task = asyncio.get_running_loop().create_task(self._step(step, rec.id), name=f"order-{view.order.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _step(self, step: Callable[[str], object], slice_id: str) -> None:
        try:
            await step(slice_id)  # type: ignore[misc]
        except (FedError, NotActivated) as exc:  # the slice says what happened; the reconciler retries what is pending
            log.info("order step for slice %s: %s", slice_id, exc)
        finally:
            self._busy.discard(slice_id)
        rec = self._m.get_or_none(slice_id)
        view = self.for_slice(rec) if rec is not None else None
        if view is not None:
            self._next_step(view)

    def resume(self) -> int:
        """Carry on every open order whose slice waits for its next step (at start); how many."""
        n = 0
        for order in self._store.orders(limit=MAX_SCAN):
            view = self.view(order)
            if view.state not in FINAL_ORDER_STATES:
                self._next_step(view)
                n += 1
        return n

    async def run(self, stop: asyncio.Event) -> None:
        """Follow every slice's events and take each order's next step, until ``stop``."""
        events = until_set(self._m.watch(), stop)
        self.resume()
        try:
            async for ev in events:
                if ev.alert is not None:
                    continue
                rec = self._m.get_or_none(ev.slice_id)
                view = self.for_slice(rec) if rec is not None else None
                if view is not None:
                    self._next_step(view)
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["ENDED", "FINAL_ORDER_STATES", "TARGET", "OrderDesk", "OrderState", "OrderView", "order_state"]
