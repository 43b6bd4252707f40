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


@contextmanager
def sparse_namespace(network: str, answering: Sequence[str]) -> Iterator[str]:
    """A namespace where only ``answering`` addresses of ``network`` (a 127.x network) answer.

    The namespace's loopback holds 127.0.0.1 and each answering address as /32; the rest of
    ``network`` is routed to a veth pair inside the namespace, where neighbour resolution fails,
    so those addresses stay silent the way absent hosts on a LAN do. Nothing leaves the
    namespace (both veth ends are in it).
    """
    with namespace() as name:
        steps = [
            "ip addr del 127.0.0.1/8 dev lo",
            "ip addr add 127.0.0.1/32 dev lo",
            "ip link add v0 type veth peer name v1",
            "ip link set v0 up",
            "ip link set v1 up",
            "sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.v0.route_localnet=1",
            f"ip route add {network} dev v0",
            *(f"ip addr add {a}/32 dev lo" for a in answering),
        ]
        _ip("netns", "exec", name, "sh", "-c", " && ".join(steps))
        yield name


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
