"""One object per running event loop, made on first use.

Sockets, SNMP engines and HTTP clients are bound to the loop that made them, and the daemon
and the tests run more than one loop in a process; so each probe module keeps its shared state
here, keyed by loop, and its ``close()`` pops this loop's object.
"""

import asyncio
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self._make = make
        self._by_loop: dict[asyncio.AbstractEventLoop, T] = {}
        self._lock = threading.Lock()  # loops in other threads may ask at the same time

    def get(self) -> T:
        """The running loop's object, made now if it has none."""
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._by_loop.get(loop)
            if made is None:
                made = self._by_loop[loop] = self._make(loop)
        return made

    def pop(self) -> T | None:
        """Forget the running loop's object and hand it back to be closed (None if none)."""
        with self._lock:
            return self._by_loop.pop(asyncio.get_running_loop(), None)

    def __getitem__(self, loop: asyncio.AbstractEventLoop) -> T:
        """The object ``loop`` already has (tests and benches look inside); KeyError if none."""
        return self._by_loop[loop]
