"""Reloading the inventory: load, validate, swap whole; on failure keep the last good one.

Three triggers share one code path: SIGHUP (:meth:`InventoryHolder.install_sighup`), a watch of
the file's *content* (:meth:`InventoryHolder.watch`; editors save by writing a new file and
renaming it over the old, so inode or mtime watches miss saves or fire twice, a SHA-256 of the
bytes does not), and the plain :meth:`InventoryHolder.reload` that ``POST /-/reload`` calls.

Reloads are serialised and the newest file always wins: async reloads (SIGHUP, the watch,
``POST /-/reload``) take turns on the loop; ``reload()`` from another thread joins that queue
when the loop is running; and every read takes a sequence number, so a parse of older bytes can
never be swapped in over a newer one (two parses raced, the older swapped in last while the
watch already held the newer hash: the old inventory stayed in force for good).

Subscribers are called with the new inventory after every good swap that changed the content.
They run on the event loop the holder is bound to (``watch``/``install_sighup``/``bind_loop``
bind it), even when ``reload()`` is called from another thread (FastAPI runs sync handlers in a
worker thread); unbound, they run in the caller's thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from monitor.inventory import Inventory
from monitor.inventory.load import (
    ISOLATE_ABOVE_BYTES,
    InventoryError,
    Problem,
    parse_inventory,
    parse_inventory_isolated,
)

log = logging.getLogger("hallmon.reload")

Subscriber = Callable[[Inventory], None]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """``ok``: the file is good (and in force); ``changed``: its content differs from before."""

    ok: bool
    problems: tuple[Problem, ...] = ()
    changed: bool = False


class InventoryHolder:
    """The inventory in force, replaced whole on a good reload (readers never see half of one).

    :meth:`load` does the first load and raises :class:`InventoryError` if the file is bad: at
    start-up there is no last good inventory to fall back on, and that must be loud.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        isolate_above: int | None = ISOLATE_ABOVE_BYTES,
    ) -> None:
        """``isolate_above``: files of at least this many bytes are parsed in a child process
        (:func:`parse_inventory_isolated`: the YAML garbage never lives here); None: never."""
        self.path = Path(path)
        self._isolate_above = isolate_above
        self._env = env
        self._clock = clock
        self._lock = threading.Lock()
        self._serial = threading.Lock()  # the sync path's turn
        self._turn: asyncio.Lock | None = None  # the async paths' turn, on self._turn_loop
        self._turn_loop: asyncio.AbstractEventLoop | None = None
        self._read_seq = 0  # numbers each read of the file
        # Reads and parses run on a thread of our own: reload() from a thread of the default
        # executor waits for the loop's turn, which must never need a thread of that pool.
        self._pool: ThreadPoolExecutor | None = None
        self._swapped_seq = 0  # the read whose inventory is in force
        self._subscribers: list[Subscriber] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[ReloadOutcome]] = set()
        self._current: Inventory | None = None
        self._sha = self._seen_sha = ""
        self.last_reload_successful = False
        self.last_reload_success_time = 0.0
        self._missing = False

    def load(self) -> Inventory:
        """The first load: the inventory, or :class:`InventoryError` (nothing to fall back on)."""
        (data, problem), seq = self._read_numbered()
        if problem is not None:
            raise InventoryError([problem])
        inventory = self._parse(data)
        with self._lock:
            self._current, self._swapped_seq = inventory, seq
            self._sha = self._seen_sha = _sha(data)
            self.last_reload_successful = True
            self.last_reload_success_time = self._clock()
        return inventory

    # ---- reading ----

    @property
    def current(self) -> Inventory:
        if self._current is None:
            raise RuntimeError("InventoryHolder.load() has not succeeded yet")
        return self._current

    @property
    def checksum(self) -> str:
        """SHA-256 (hex) of the bytes of the inventory in force."""
        return self._sha

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # ---- reloading ----

    def reload(self) -> ReloadOutcome:
        """Reload now (blocking; from any thread). Keeps the last good inventory on failure.
        Off the bound, running loop it takes its turn there with the other reloads."""
        loop = self._loop
        if loop is not None and loop.is_running() and not _on_loop(loop):
            return asyncio.run_coroutine_threadsafe(self.areload(), loop).result()
        with self._serial:
            (data, problem), seq = self._read_numbered()
            if problem is not None:
                return self._fail((problem,))
            self._seen_sha = _sha(data)
            try:
                inventory = self._parse(data)
            except InventoryError as exc:
                return self._fail(tuple(exc.problems))
            return self._swap(inventory, _sha(data), seq)

    async def areload(self) -> ReloadOutcome:
        """Reload with the reading and parsing in a thread; the swap happens on this loop."""
        self._loop = asyncio.get_running_loop()
        async with self._my_turn():
            (data, problem), seq = await self._off_loop(self._read_numbered)
            if problem is not None:
                return self._fail((problem,))
            return await self._reload_bytes(data, seq)

    async def check_file(self) -> ReloadOutcome | None:
        """One watch step: reload if the file's content changed since last seen, else None.

        A missing file is tolerated (editors replace files by rename; there is a moment without
        one): nothing happens until it is back.
        """
        self._loop = asyncio.get_running_loop()
        async with self._my_turn():
            return await self._check_file()

    async def _check_file(self) -> ReloadOutcome | None:
        (data, problem), seq = await self._off_loop(self._read_numbered)
        if problem is not None:
            if not self._missing:
                log.warning("inventory %s unreadable, keeping the current one: %s", self.path,
                            problem.message)  # fmt: skip
            self._missing = True
            return None
        if self._missing:
            log.info("inventory %s readable again", self.path)
            self._missing = False
        if _sha(data) == self._seen_sha:
            return None
        return await self._reload_bytes(data, seq)

    async def watch(
        self,
        interval: float = 5.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """Poll the file's content every ``interval`` seconds, forever (cancel to stop)."""
        self._loop = asyncio.get_running_loop()  # from now on subscribers run on this loop
        while True:
            await sleep(interval)
            try:
                await self.check_file()
            except Exception:  # the watch must outlive any surprise; say what happened
                log.exception("inventory watch step failed")

    # ---- SIGHUP ----

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGHUP reloads (as for every Unix daemon). Not available on Windows."""
        self._loop = loop
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def uninstall_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading %s", self.path)
        task = asyncio.get_running_loop().create_task(self.areload())
        self._tasks.add(task)  # keep a reference until done (the loop holds only a weak one)
        task.add_done_callback(self._tasks.discard)

    async def wait_reloads(self) -> None:
        """Wait for reloads started by signals (tests; clean shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks)

    # ---- internals ----

    async def _off_loop(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inventory-reload")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _my_turn(self) -> asyncio.Lock:
        """The async reloads' lock, one per event loop (tests run several loops)."""
        loop = asyncio.get_running_loop()
        if self._turn is None or self._turn_loop is not loop:
            self._turn, self._turn_loop = asyncio.Lock(), loop
        return self._turn

    def _read_numbered(self) -> tuple[tuple[bytes, Problem | None], int]:
        with self._lock:
            self._read_seq += 1
            seq = self._read_seq
        return self._read(), seq

    def _read(self) -> tuple[bytes, Problem | None]:
        try:
            return self.path.read_bytes(), None
        except OSError as exc:
            return b"", Problem(str(self.path), 1, 1, "", f"cannot read the file: {exc.strerror}")

    def _parse(self, data: bytes) -> Inventory:
        isolate = self._isolate_above is not None and len(data) >= self._isolate_above
        parse = parse_inventory_isolated if isolate else parse_inventory
        return parse(data, str(self.path), env=self._env, base_dir=self.path.parent)

    async def _reload_bytes(self, data: bytes, seq: int) -> ReloadOutcome:
        self._seen_sha = _sha(data)
        try:
            inventory = await self._off_loop(self._parse, data)
        except InventoryError as exc:
            return self._fail(tuple(exc.problems))
        return self._swap(inventory, _sha(data), seq)

    def _fail(self, problems: tuple[Problem, ...]) -> ReloadOutcome:
        with self._lock:
            self.last_reload_successful = False
        log.error(
            "inventory reload failed, keeping the last good one (%d problem%s):\n%s",
            len(problems),
            "" if len(problems) == 1 else "s",
            "\n".join(p.describe() for p in problems),  # devices named by id too
        )
        return ReloadOutcome(ok=False, problems=problems, changed=False)

    def _swap(self, inventory: Inventory, sha: str, seq: int) -> ReloadOutcome:
        with self._lock:
            if seq < self._swapped_seq:  # newer bytes are already in force: never go back
                log.info("inventory reload of older content skipped (a newer one is in force)")
                return ReloadOutcome(ok=True, changed=False)
            self._swapped_seq = seq
            changed = sha != self._sha
            if changed:
                self._current, self._sha = inventory, sha
            self.last_reload_successful = True
            self.last_reload_success_time = self._clock()
        if changed:
            log.info("inventory reloaded: %d devices (sha256 %s)", len(inventory.devices), sha[:12])
            self._notify(inventory)
        return ReloadOutcome(ok=True, changed=changed)

    def _notify(self, inventory: Inventory) -> None:
        loop = self._loop
        off_loop = loop is not None and loop.is_running() and not _on_loop(loop)
        for callback in list(self._subscribers):
            if off_loop:
                assert loop is not None
                loop.call_soon_threadsafe(self._call, callback, inventory)
            else:
                self._call(callback, inventory)

    @staticmethod
    def _call(callback: Subscriber, inventory: Inventory) -> None:
        try:
            callback(inventory)
        except Exception:  # one broken subscriber must not stop the others
            log.exception("inventory subscriber %r failed", callback)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
