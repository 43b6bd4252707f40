"""Trap benchmark: notifications handled per second per core, hallmon beside net-snmp's snmptrapd.

The same stream goes to both receivers on loopback: v2c linkDown/linkUp traps (alternating, so
every trap moves a held condition and reaches Pipeline.handle) from 200 device addresses
(127.36.0.1-200), sent by a separate process at a fixed rate; then a v3 authPriv (SHA-256/AES)
trap captured from net-snmp's snmptrap, replayed from one device address.

- hallmon: the daemon's TrapReceiver and a Pipeline (no store, no alert channels: the receiver's
  own cost plus the state machine), in this process; CPU from os.times().
- snmptrapd: ``snmptrapd -f -C -m ''`` logging every notification to a file (its cheapest
  useful mode); CPU from /proc/PID/stat; handled = lines written.

Rate per core = notifications handled / CPU seconds spent (not wall time: the sender is paced).

Budget (exit 1 when missed): hallmon handles >= 4,000 v2c traps per CPU second. Why: the
receiver admits at most 2,000 datagrams a second by default (its flood guard), and that worst
case must cost at most half a core, leaving the other half of a 2-core hall server to polling.
v3 is reported, not budgeted: it runs on pysnmp (~ms per message), and v3 traps are rare.

``--store``: the receiver and the pipeline write to a SQLite store (held conditions and events
through the write queue, as the daemon does); the CPU of its writer thread counts, and the
writes done are reported (coalesced: far fewer than the traps).

Run: .venv/bin/python bench/traps.py [--count 20000] [--rate 5000] [--v3-count 500] [--store]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.inventory import Inventory  # noqa: E402
from monitor.pipeline import Pipeline  # noqa: E402
from monitor.receiver import TrapReceiver  # noqa: E402
from probes.snmp_ber import OBJECT_IDENTIFIER, encode_varbinds  # noqa: E402

BUDGET_V2C_PER_CPU_SECOND = 4000.0
DEVICES = [f"127.36.0.{i}" for i in range(1, 201)]
COMMUNITY = "bench-traps"
V3 = ("monitor", "bench-auth-123", "bench-priv-123", "0x8000000001020399")
LINK_DOWN, LINK_UP = "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.6.3.1.1.5.4"

# The sender: a separate process so its CPU is not ours. argv: port, rate, file of datagrams
# (length-prefixed, each followed by its source address index). Bounded: it sends the file once.
SENDER = r"""
import socket, struct, sys, time
port, rate, path, sources = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4:]
socks = []
for addr in sources:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, 0)); socks.append(s)
raw = open(path, "rb").read()
msgs, i = [], 0
while i < len(raw):
    n, src = struct.unpack_from("!HH", raw, i); i += 4
    msgs.append((socks[src], raw[i:i + n])); i += n
start = time.perf_counter()
for k, (s, data) in enumerate(msgs):
    due = start + k / rate
    while time.perf_counter() < due - 0.002:
        time.sleep(0.001)
    s.sendto(data, ("127.0.0.1", port))
"""


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _len(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")


def v2_trap(oid: str, ifindex: int, request_id: int) -> bytes:
    vbs = encode_varbinds([("1.3.6.1.2.1.1.3.0", 0x43, 12345),
                           ("1.3.6.1.6.3.1.1.4.1.0", OBJECT_IDENTIFIER, oid),
                           (f"1.3.6.1.2.1.2.2.1.1.{ifindex}", 0x02, ifindex)])
    rid = request_id.to_bytes(4, "big")
    pdu = b"\x02\x04" + rid + b"\x02\x01\x00\x02\x01\x00" + vbs
    msg = b"\x02\x01\x01\x04" + bytes([len(COMMUNITY)]) + COMMUNITY.encode() + b"\xa7" \
        + _len(len(pdu)) + pdu
    return b"\x30" + _len(len(msg)) + msg


def v2_stream(count: int) -> list[tuple[int, bytes]]:
    out = []
    for k in range(count):
        src = k % len(DEVICES)
        up = (k // len(DEVICES)) % 2 == 1  # each device: down, up, down, ...
        out.append((src, v2_trap(LINK_UP if up else LINK_DOWN, 1 + src % 8, k)))
    return out


def v3_datagram() -> bytes:
    """One real v3 authPriv trap as net-snmp's snmptrap sends it."""
    user, auth, priv, engine = V3
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(10)
        subprocess.run(["snmptrap", "-v", "3", "-u", user, "-l", "authPriv", "-a", "SHA-256",
                        "-A", auth, "-x", "AES", "-X", priv, "-e", engine,
                        f"127.0.0.1:{sink.getsockname()[1]}", "", LINK_DOWN,
                        "1.3.6.1.2.1.2.2.1.1.1", "i", "1"], check=True, timeout=10)
        return sink.recvfrom(65535)[0]


def write_stream(stream: list[tuple[int, bytes]], path: Path) -> None:
    with path.open("wb") as f:
        for src, data in stream:
            f.write(len(data).to_bytes(2, "big") + src.to_bytes(2, "big") + data)


async def send(port: int, rate: float, path: Path, sources: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", SENDER, str(port),
                                                str(rate), str(path), *sources)
    await asyncio.wait_for(proc.wait(), 600)


def inventory() -> Inventory:
    return Inventory.model_validate({
        "site": {"name": "bench"},
        "credentials": {
            "traps": {"version": "2c", "community": "${C}"},
            "v3": {"version": 3, "user": V3[0], "auth": "sha256", "auth_key": "${A}",
                   "priv": "aes", "priv_key": "${P}"},
        },
        "devices": [{"id": f"sw-{i}", "name": f"交换机{i}", "class": "switch", "address": a}
                    for i, a in enumerate(DEVICES)],
    }, context={"env": {"C": COMMUNITY, "A": V3[1], "P": V3[2]}})


async def ours(stream_path: Path, rate: float, v3_path: Path,
               store_dir: Path | None = None) -> dict[str, float]:
    inv = inventory()
    astore = None
    if store_dir is not None:
        from monitor.store import AsyncStore, Store, sqlite_url

        astore = AsyncStore(Store(sqlite_url(store_dir), timezone="Asia/Shanghai"))
    pipeline = Pipeline(inv, clock=time.time, store=astore)
    for device in inv.devices:  # devices up, so every trap moves a status
        for c in inv.checks_for(device):
            if c.name == "ping":
                from probes.result import ProbeResult

                await pipeline.handle(c, ProbeResult.success(0.001))
    receiver = TrapReceiver(inv, pipeline.handle, lambda d: None, max_per_second=1e9,
                            per_device_per_second=1e9, v3_per_second=1e9,
                            queue_size=10**6, store=astore)
    await receiver.start("127.0.0.1", 0)
    assert receiver.address is not None
    try:
        out: dict[str, float] = {}
        for label, path, r, sources in _phases(stream_path, rate, v3_path):
            before = sum(receiver.received.values())
            c0, t0 = cpu(), time.perf_counter()
            await send(receiver.address[1], r, path, sources)
            await _settle(lambda: sum(receiver.received.values()))
            await receiver.drain()
            if astore is not None:
                await astore.drain(120)
            used = cpu() - c0
            handled = sum(receiver.received.values()) - before
            out[f"{label}_handled"] = handled
            out[f"{label}_cpu_seconds"] = round(used, 3)
            out[f"{label}_per_cpu_second"] = round(handled / used, 1) if used else 0.0
            out[f"{label}_wall_seconds"] = round(time.perf_counter() - t0, 2)
        out["results_applied"] = pipeline.results_total
        if astore is not None:
            out["store_writes"] = astore.writes["ok"]
            out["store_writes_failed"] = astore.writes["failed"]
        return out
    finally:
        await receiver.stop()
        if astore is not None:
            await astore.aclose()


def _phases(stream: Path, rate: float, v3: Path) -> list[tuple[str, Path, float, list[str]]]:
    return [("v2c", stream, rate, DEVICES), ("v3", v3, min(rate, 500.0), DEVICES[:1])]


async def _settle(count: Callable[[], int], quiet: float = 0.5) -> None:
    """Wait until the count stops moving for ``quiet`` seconds (bounded: 120 s)."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + 120
    while time.monotonic() < deadline:
        now_count = count()
        if now_count != last:
            last, since = now_count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.05)


def _spawn_snmptrapd(workdir: Path) -> tuple[subprocess.Popen[bytes], int, Path] | None:
    exe = shutil.which("snmptrapd") or shutil.which("snmptrapd", path="/usr/sbin")
    if exe is None:
        return None
    user, auth, priv, engine = V3
    conf = workdir / "snmptrapd.conf"
    conf.write_text(f"authCommunity log {COMMUNITY}\n"
                    f"createUser -e {engine} {user} SHA-256 {auth} AES {priv}\n"
                    f"authUser log {user} priv\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = workdir / "snmptrapd.log"
    proc = subprocess.Popen([exe, "-f", "-n", "-C", "-c", str(conf), "-m", "", "-M", "/dev/null",
                             "-Lf", str(log), "-F", "%b\n", f"udp:127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MIBS": "", "SNMPCONFPATH": str(workdir),
                                 "HOME": str(workdir)})
    return proc, port, log


async def snmptrapd(stream_path: Path, rate: float, v3_path: Path,
                    workdir: Path) -> dict[str, float] | None:
    spawned = await asyncio.to_thread(_spawn_snmptrapd, workdir)
    if spawned is None:
        return None
    proc, port, log = spawned
    try:
        await asyncio.sleep(1.0)  # start-up (its log opens with a banner line)

        def lines() -> int:
            try:
                return log.read_bytes().count(b"\n")
            except FileNotFoundError:
                return 0

        out: dict[str, float] = {}
        for label, path, r, sources in _phases(stream_path, rate, v3_path):
            before, c0, t0 = lines(), proc_cpu(proc.pid), time.perf_counter()
            await send(port, r, path, sources)
            await _settle(lines)
            used = proc_cpu(proc.pid) - c0
            handled = lines() - before
            out[f"{label}_handled"] = handled
            out[f"{label}_cpu_seconds"] = round(used, 3)
            out[f"{label}_per_cpu_second"] = round(handled / used, 1) if used else 0.0
            out[f"{label}_wall_seconds"] = round(time.perf_counter() - t0, 2)
        return out
    finally:
        proc.terminate()
        proc.wait(10)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=5000.0, help="datagrams per second sent")
    parser.add_argument("--v3-count", type=int, default=500)
    parser.add_argument("--store", action="store_true",
                        help="hallmon writes to a SQLite store, as the daemon does")
    args = parser.parse_args()
    count = max(1, min(args.count, 200_000))  # bounded
    v3_count = max(1, min(args.v3_count, 20_000))
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="hallmon-bench-traps-") as tmp:
        work = Path(tmp)
        stream = work / "v2c.bin"
        write_stream(v2_stream(count), stream)
        v3 = work / "v3.bin"
        write_stream([(0, v3_datagram())] * v3_count, v3)
        mine = await ours(stream, args.rate, v3, work if args.store else None)
        theirs = await snmptrapd(stream, args.rate, v3, work)
    ok = mine["v2c_per_cpu_second"] >= BUDGET_V2C_PER_CPU_SECOND
    print(f"hallmon   v2c: {mine['v2c_handled']:.0f} traps, {mine['v2c_cpu_seconds']:.2f} s CPU"
          f" -> {mine['v2c_per_cpu_second']:.0f}/s per core; v3: "
          f"{mine['v3_per_cpu_second']:.0f}/s per core")
    if theirs:
        print(f"snmptrapd v2c: {theirs['v2c_handled']:.0f} traps, "
              f"{theirs['v2c_cpu_seconds']:.2f} s CPU -> {theirs['v2c_per_cpu_second']:.0f}/s "
              f"per core; v3: {theirs['v3_per_cpu_second']:.0f}/s per core")
    print(json.dumps({"bench": "traps", "sent_v2c": count, "sent_v3": v3_count,
                      "rate": args.rate, "store": args.store, "hallmon": mine, "snmptrapd": theirs,
                      "budget_v2c_per_cpu_second": BUDGET_V2C_PER_CPU_SECOND, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
