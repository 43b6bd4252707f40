"""UDP peers that misbehave on purpose: one that never answers, one that answers garbage BER.

Both bind 127.0.0.1 on a kernel-chosen port and are closed by their context manager.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# A BER SEQUENCE announcing 0x7f bytes but carrying 5, then junk: no SNMP decoder accepts it.
MALFORMED_BER = b"\x30\x7f\x02\x01\x01\x04\x06"


@contextmanager
def silent_udp(host: str = "127.0.0.1") -> Iterator[tuple[str, int]]:
    """A bound socket nobody reads: requests sent there are never answered (timeout path)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        yield host, sock.getsockname()[1]
    finally:
        sock.close()


@contextmanager
def malformed_ber_server(
    host: str = "127.0.0.1", reply: bytes = MALFORMED_BER
) -> Iterator[tuple[str, int]]:
    """Answers every datagram with ``reply`` from a thread; yields (host, port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.05)
            if ready:
                _, peer = sock.recvfrom(65535)
                sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, name="malformed-ber", daemon=True)
    thread.start()
    try:
        yield host, sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()
