"""Slots of the Prefect API's concurrency limits, held by the topsStack stage across lines.

Asking the API for a slot per line costs a round trip per line (seconds, on a server busy
recording the stage's task runs), and while a limit is full Prefect's client waits out
``Retry-After`` before asking again, so slots freed in between sit idle (the limits benchmark
measured 8.9x the unlimited wall time that way). Instead the stage holds slots in
:class:`Hold` objects that outlive lines: a line that finishes hands its share to the next
waiting line without asking the API; when waiting lines that could start lack slots, one
request per limit asks for what all of them need; slots that no waiting line has needed for
:data:`IDLE_HOLD_S` go back. Other runs served by the same API see held slots as taken, as
they would see tagged task runs.

Each hold is a thread inside :func:`prefect.concurrency.sync.concurrency` (public API: it
acquires a lease, renews it, and releases it on exit); a killed flow's leases expire on the
server like a task run's.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from dataclasses import dataclass, field
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.sync import concurrency

#: How long the stage keeps slots that no waiting line needs (the lines a finishing line makes
#: ready usually need them again at once).
IDLE_HOLD_S = 10.0
#: How long closing waits for a granted hold to give its slots back.
RELEASE_WAIT_S = 30.0


@dataclass(eq=False)
class Hold:
    """``amount`` slots of the limit ``name``; ``granted`` once the API gave them.

    Asked for as ``wanted`` slots, cut to what the limit has free at the time (no less than
    ``minimum``): the API grants a request whole or not at all."""

    name: str
    wanted: int
    minimum: int
    amount: int = 0
    granted: bool = False
    error: BaseException | None = None
    _release: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None


class ServerSlots:
    """The holds of one stage; call every method from one thread (the engine's loop).

    A hold that is granted, or fails, is put on ``events``; the loop then calls
    :meth:`granted` (or raises its error).
    """

    def __init__(self, events: queue.Queue[object], flow_run_id: UUID | None = None) -> None:
        self._events = events
        self._holder = (
            ConcurrencyLeaseHolder(type="flow_run", id=flow_run_id) if flow_run_id else None
        )
        self._pending: dict[str, Hold] = {}
        self._granted: list[Hold] = []
        self.requests = 0  # holds asked for, over the stage

    def pending(self, name: str) -> bool:
        return name in self._pending

    @property
    def any_pending(self) -> bool:
        return bool(self._pending)

    def request(self, name: str, wanted: int, minimum: int) -> None:
        """Ask for ``wanted`` more slots of ``name``, or as many as are free but at least
        ``minimum`` (one request per limit at a time)."""
        if name in self._pending:
            return
        hold = Hold(name, wanted, minimum)
        self.requests += 1
        # In the caller's context: the Prefect settings (the API URL) may live there.
        context = contextvars.copy_context()
        hold._thread = threading.Thread(
            target=context.run, args=(self._hold, hold), name=f"slots-{name}", daemon=True
        )
        self._pending[name] = hold
        hold._thread.start()

    def granted(self, hold: Hold) -> None:
        """Record that ``hold`` (put on ``events``) holds its slots now."""
        self._pending.pop(hold.name, None)
        self._granted.append(hold)

    def release_surplus(self, name: str, surplus: int) -> int:
        """Give back granted holds of ``name`` worth at most ``surplus`` slots (largest
        first); returns how many slots were given back."""
        released = 0
        for hold in sorted(self._granted, key=lambda h: -h.amount):
            if hold.name == name and hold.amount <= surplus - released:
                self._granted.remove(hold)
                hold._release.set()
                released += hold.amount
        return released

    def close(self) -> None:
        """Give back every slot: wait for granted holds; pending ones give theirs back as soon
        as they are granted."""
        for hold in [*self._pending.values(), *self._granted]:
            hold._release.set()
        for hold in self._granted:
            if hold._thread is not None:
                hold._thread.join(RELEASE_WAIT_S)
        self._pending.clear()
        self._granted.clear()

    def _hold(self, hold: Hold) -> None:
        try:
            with get_client(sync_client=True) as client:
                limit = client.read_global_concurrency_limit_by_name(hold.name)
            hold.amount = max(hold.minimum, min(hold.wanted, limit.limit - limit.active_slots))
            # Waits until the API grants it (no timeout: a timed-out attempt is logged as an
            # error by Prefect's client); a hold no longer wanted then gives it back at once.
            with concurrency(
                hold.name,
                occupy=hold.amount,
                strict=True,
                holder=self._holder,
                # a hiccup renewing the lease must not end the stage
                raise_on_lease_renewal_failure=False,
            ):
                hold.granted = True
                self._events.put(hold)
                hold._release.wait()
        except Exception as exc:  # the API refused or is unreachable: the stage must stop
            hold.error = exc
            self._events.put(hold)
