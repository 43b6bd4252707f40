"""A network namespace of the test's own, where nothing answers ICMP echo.

Why this design (safest choice): the namespace has only its own loopback, brought up with
``net.ipv4.icmp_echo_ignore_all=1`` (and the IPv6 twin). The code under test runs *inside* it
(``ip netns exec``), so every 127.x address there is a silent host, and no packet can leave the
namespace: no veth, no route, no address outside 127.0.0.0/8 and ::1. Needs root and iproute2.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


SILENT = ("net.ipv4.icmp_echo_ignore_all=1", "net.ipv6.icmp.echo_ignore_all=1")


@contextmanager
def namespace(sysctls: Sequence[str] = ()) -> Iterator[str]:
    """Yield the name of a fresh namespace (loopback up) with per-namespace ``sysctls`` set."""
    name = f"hallmon-ns-{os.getpid()}-{next(_counter)}"
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        for knob in sysctls:
            _ip("netns", "exec", name, "sysctl", "-qw", knob)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True,
                       timeout=10)


@contextmanager
def silent_namespace() -> Iterator[str]:
    """A namespace whose loopback ignores echo requests: every 127.x and ::1 is silent."""
    with namespace(SILENT) as name:
        yield name


def run_in_namespace(
    name: str, argv: Sequence[str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside namespace ``name``; output captured as text, bounded in time."""
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


# A link between two of the test's namespaces, for outages made by taking a link down (the clean
# outage, docs/field-notes.md). Link-local IPv4 (169.254.0.0/16): never routed anywhere, and
# both ends live in namespaces the test created, so no packet can leave them.
LINK_NEAR, LINK_FAR = "169.254.77.1", "169.254.77.2"


@contextmanager
def linked_namespaces() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces (near, far) joined by a veth pair ``hm-near`` <-> ``hm-far`` with
    LINK_NEAR and LINK_FAR on a /30. Code runs in ``near``; ``far`` is the device."""
    with namespace() as near, namespace() as far:
        _ip("link", "add", "hm-near", "netns", near, "type", "veth", "peer", "name", "hm-far",
            "netns", far)
        for ns, dev, addr in ((near, "hm-near", LINK_NEAR), (far, "hm-far", LINK_FAR)):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        yield near, far


def set_link(ns: str, dev: str, up: bool) -> None:
    """Take a namespace's interface down (an outage) or up again."""
    _ip("-n", ns, "link", "set", dev, "up" if up else "down")
