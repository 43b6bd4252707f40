"""High availability for one site (issue 17): pollers sharing one database share the devices.

The database is the arbiter (store/pollers.py): each poller renews a lease row every
``heartbeat`` seconds; the live set is the rows whose lease has not run out at the database's
clock. Every poller computes the same assignment from the same live set, by rendezvous
(highest-random-weight) hashing: a unit of devices goes to the live poller with the highest
``hash(poller, unit)``. When a poller dies only its units move (each to its next-highest), when
one joins it takes a fair share from the others, and nothing else moves.

The unit is the device's topology root: a device goes with its parent chain, because telling
"down" from "unreachable behind a dead switch" needs the parent's state in the same poller. A
hall whose devices all hang below one core switch therefore runs active/standby (one poller
polls, the others wait to take over); halls with several roots share the work.

A dead poller's devices are polled again once its lease ran out: the others time a heartbeat
to just after a peer's expiry (``Lease.next_beat_in``), so within ``lease`` plus one poll interval
(default lease 15 s; measured 3-4 s with a 3 s lease and 1 s polls, tests/test_ha.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from monitor.inventory import Inventory
from monitor.store.aio import AsyncStore
from monitor.store.pollers import Membership

log = logging.getLogger("hallmon.ha")

DEFAULT_LEASE = 15.0
DEFAULT_HEARTBEAT = 5.0


def default_poller_id(listen: str) -> str:
    """Stable across restarts of one poller (a restart takes its own devices back at once),
    distinct for pollers on one machine (the listen port)."""
    return f"{socket.gethostname()}:{listen.rsplit(':', 1)[-1]}"


def weight(poller: str, unit: str) -> int:
    """Stable across processes and machines (not Python's salted ``hash``)."""
    digest = hashlib.sha256(f"{poller}\0{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def owner(unit: str, live: Iterable[str]) -> str | None:
    """The live poller that owns ``unit`` (None if no poller is live)."""
    return max(live, key=lambda p: (weight(p, unit), p), default=None)


def units(inventory: Inventory) -> dict[str, str]:
    """device id -> its unit (the root of its parent chain)."""
    parents = {d.id: d.parent for d in inventory.devices}
    out: dict[str, str] = {}
    for dev in parents:
        root, seen = dev, {dev}
        while (up := parents.get(root)) is not None and up in parents and up not in seen:
            seen.add(up)
            root = up
        out[dev] = root
    return out


def assignment(inventory: Inventory, live: Iterable[str]) -> dict[str, str]:
    """device id -> owning poller, for every device (empty if nobody is live)."""
    live = sorted(set(live))
    if not live:
        return {}
    by_unit: dict[str, str] = {}
    out = {}
    for dev, unit in units(inventory).items():
        got = by_unit.get(unit)
        if got is None:
            got = by_unit[unit] = owner(unit, live)  # type: ignore[assignment]
        out[dev] = got
    return out  # type: ignore[return-value]


@dataclass
class Lease:
    """This poller's lease: renews it, and calls ``on_change`` when the live set changes."""

    store: AsyncStore
    poller_id: str
    lease: float = DEFAULT_LEASE
    heartbeat: float = DEFAULT_HEARTBEAT
    on_change: Callable[[tuple[str, ...]], Awaitable[None]] | None = None
    membership: Membership | None = None
    last_ok: float | None = None  # time.time() of the last successful heartbeat
    failures: int = 0
    _info: str = field(default_factory=lambda: f"host={socket.gethostname()} pid={os.getpid()}")

    @property
    def live(self) -> tuple[str, ...]:
        return self.membership.live if self.membership is not None else ()

    async def beat(self) -> bool:
        """One heartbeat; True if the live set changed."""
        before = self.live
        self.membership = await self.store.run(self.store.store.heartbeat, self.poller_id,
                                               self.lease, self._info)
        self.last_ok = time.time()
        self.failures = 0
        if self.live != before:
            log.info("pollers live: %s (was %s)", ", ".join(self.live) or "none",
                     ", ".join(before) or "none")
            return True
        return False

    async def run(self) -> None:
        """Heartbeat for ever. A failed heartbeat (database away) keeps the last assignment:
        polling on is better than nobody polling; the lease runs out in the others' view and
        they take over, so both may poll until the database is back."""
        while True:
            await asyncio.sleep(self.next_beat_in())
            try:
                changed = await self.beat()
            except Exception as exc:
                self.failures += 1
                log.warning("lease heartbeat failed (%d in a row): %s", self.failures,
                            type(exc).__name__)
                continue
            if changed and self.on_change is not None:
                try:
                    await self.on_change(self.live)
                except Exception:
                    log.exception("rebalancing after a change of pollers failed")

    def next_beat_in(self) -> float:
        """The heartbeat period, or less: wake just after a peer's lease would run out, so a
        dead poller's devices move after ``lease`` (plus a poll), not ``lease + heartbeat``.
        A live peer renews long before that, so this costs nothing while all is well."""
        m = self.membership
        if m is None or self.last_ok is None:
            return self.heartbeat
        elapsed = time.time() - self.last_ok
        left = [(p.expires_at - m.now).total_seconds() - elapsed for p in m.pollers
                if p.id != self.poller_id and p.expires_at > m.now]
        return max(0.05, min([self.heartbeat, *(t + 0.05 for t in left)]))

    async def leave(self) -> None:
        await self.store.run(self.store.store.leave, self.poller_id)
