"""Real SNMP agents on loopback high ports: net-snmp ``snmpd`` and ``snmpsim`` with recordings.

Plain context managers (usable from fixtures, benchmarks and other engineers' tests)::

    with snmpd_agent() as agent:            # v2c community + v3 authPriv users, see SNMPD_USERS
        ... agent.host, agent.port ...
    with snmpsim_agent("hikvision") as agent:   # community "hikvision" serves that recording
        ... RECORDINGS["hikvision"] ...

snmpsim runs as nobody from the repo's .venv-snmpsim (docs/field-notes.md: its data and cache
folders must be readable by nobody, high ports only, one process per endpoint).
"""

from __future__ import annotations

import bz2
import glob
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api

from tests.agents.proc import Ready, free_port, running

ROOT = Path(__file__).resolve().parents[2]
SIM_VENV = ROOT / ".venv-snmpsim"
SIM_BIN = SIM_VENV / "bin" / "snmpsim-command-responder"
DATA = ROOT / "tests" / "data" / "snmp"

# Recordings chosen from snmpsim-data (name -> path inside its data folder). The apc-8932 is
# an APC rack PDU (Web/SNMP card, PowerNet MIB) filed under UPS/: snmpsim-data has no APC
# recording with UPS-MIB; UPS-MIB values are exercised against snmpd instead.
RECORDINGS = {
    "hikvision": "camera/hikvision.snmprec.bz2",
    "hikvision-nvr": "camera/hikvision-network-video-recorder.snmprec.bz2",
    "huawei-s5720": "network/router/huawei-s5720.snmprec.bz2",
    "apc-8932": "UPS/apc-8932.snmprec",
    "windows-xp": "os/windows/XP.snmprec.bz2",
}

# v3 users of the test snmpd (user, auth protocol, auth key, priv protocol, priv key).
SNMPD_COMMUNITY = "hallmon-ro"
SNMPD_USERS = (
    ("hm-sha-aes", "SHA", "auth-key-one", "AES", "priv-key-one"),
    ("hm-sha256-aes", "SHA-256", "auth-key-two", "AES", "priv-key-two"),
    ("hm-sha512-aes256", "SHA-512", "auth-key-three", "AES-256", "priv-key-three"),
)


@dataclass(frozen=True)
class Agent:
    host: str
    port: int
    community: str


def get_message(community: str, oid: str = "1.3.6.1.2.1.1.3.0") -> bytes:
    """A v2c GET request, for readiness checks without an engine."""
    mod = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    pdu = mod.GetRequestPDU()
    mod.apiPDU.set_defaults(pdu)
    mod.apiPDU.set_varbinds(pdu, [(mod.ObjectIdentifier(oid), mod.Null(""))])
    msg = mod.Message()
    mod.apiMessage.set_defaults(msg)
    mod.apiMessage.set_community(msg, community)
    mod.apiMessage.set_pdu(msg, pdu)
    return bytes(encoder.encode(msg))


def answers(agent: Agent) -> Ready:
    """Ready once the agent answers a GET (each try waits 0.2 s for the reply)."""
    request = get_message(agent.community)

    def ready() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            sock.sendto(request, (agent.host, agent.port))
            try:
                data = sock.recv(65535)
            except TimeoutError:
                return False
        decoder.decode(data, asn1Spec=api.PROTOCOL_MODULES[api.SNMP_VERSION_2C].Message())
        return True

    return ready


# snmpd fails to start with more than ~100 endpoints on one agentAddress line: past that they
# are passed on its command line instead (bench/daemon.py serves 1,000 devices).
MAX_CONFIG_ENDPOINTS = 100


def _endpoints(addresses: Sequence[str], port: int) -> list[str]:
    return [f"udp:{a}:{port}" for a in addresses]


def snmpd_config(addresses: Sequence[str], port: int) -> str:
    lines = [f"agentAddress {','.join(_endpoints(addresses, port))}"] if len(
        addresses) <= MAX_CONFIG_ENDPOINTS else []
    lines += [
        f"rocommunity {SNMPD_COMMUNITY} 127.0.0.0/8",
        "sysLocation hallmon test hall, floor 2",
        "sysContact it@hall.example",
        "sysName hallmon-snmpd",
        "sysServices 72",
        "dontLogTCPWrappersConnects yes",  # Debian's snmpd logs every request otherwise
        # A burst of requests must not overflow the agent's socket (the default ~200 KB drops
        # a few hundred queued requests: load tests would measure snmpd, not the poller).
        "[snmp] serverRecvBuf 8388608",
        "[snmp] serverSendBuf 8388608",
    ]
    for user, auth, auth_key, priv, priv_key in SNMPD_USERS:
        lines.append(f'createUser {user} {auth} "{auth_key}" {priv} "{priv_key}"')
        lines.append(f"rouser {user} priv")
    return "\n".join(lines) + "\n"


@contextmanager
def snmpd_agent(
    addresses: Sequence[str] = ("127.0.0.1",), port: int | None = None
) -> Iterator[Agent]:
    """net-snmp snmpd in the foreground with only our config, on loopback ``addresses``."""
    snmpd = shutil.which("snmpd") or "/usr/sbin/snmpd"
    port = port or free_port(addresses[0], udp=True)
    work = Path(tempfile.mkdtemp(prefix="hallmon-snmpd-"))
    conf = work / "snmpd.conf"
    conf.write_text(snmpd_config(addresses, port))
    env = {**os.environ, "SNMP_PERSISTENT_DIR": str(work / "persist"), "MIBS": ""}
    # -C: no system config files; -f: foreground; -Le: log to stderr, which running() sends
    # to a file; -M: no MIB files to parse.
    argv = [snmpd, "-f", "-C", "-c", str(conf), "-Le", "-p", str(work / "snmpd.pid"),
            "-M", "/nonexistent"]
    if len(addresses) > MAX_CONFIG_ENDPOINTS:
        argv += _endpoints(addresses, port)
    agent = Agent(addresses[0], port, SNMPD_COMMUNITY)
    try:
        with running(argv, what="snmpd", log=work / "snmpd.log", ready=answers(agent), every=0,
                     env=env):
            yield agent
    finally:
        shutil.rmtree(work, ignore_errors=True)


def recordings_dir() -> Path:
    """snmpsim-data's data folder (inside the snmpsim venv)."""
    pattern = str(SIM_VENV / "lib" / "python3*" / "site-packages" / "snmpsim_data" / "data")
    found = glob.glob(pattern)
    if not found:
        raise FileNotFoundError("snmpsim-data not installed: make .venv-snmpsim/.installed")
    return Path(found[0])


def recording_path(name: str) -> Path:
    """Where snmpsim-data keeps recording ``name`` (inside the snmpsim venv)."""
    return recordings_dir() / RECORDINGS[name]


def all_recordings() -> dict[str, Path]:
    """Every recording snmpsim-data ships, by its path without extension ("UPS/eaton-93e-80")."""
    root = recordings_dir()
    found = sorted(root.rglob("*.snmprec")) + sorted(root.rglob("*.snmprec.bz2"))
    return dict(sorted((str(p.relative_to(root)).split(".snmprec")[0], p) for p in found))


def read_recording(path: Path) -> bytes:
    raw = path.read_bytes()
    return bz2.decompress(raw) if path.suffix == ".bz2" else raw


def cut(records: bytes, oids: Sequence[str]) -> bytes:
    """The lines of snmprec ``records`` at or under ``oids``, in file order.

    The largest recordings are ~200 MB (a million lines; snmpsim indexes ~100k lines/s): a test
    serves each cut to what hallmon asks for. A GET or walk of those OIDs is answered as by the
    whole recording, except that a walk's last GETBULK may see endOfMibView (the end of the cut)
    where the whole recording has the next subtree: both end a walk.
    """
    # One regular-expression pass (its literal prefix "\n1." is searched at C speed): a find
    # per OID read the largest files forty times over.
    wanted = b"|".join(re.escape(oid.encode()) for oid in sorted(set(oids), key=len, reverse=True))
    lines = re.compile(rb"\n((?:" + wanted + rb")[.|][^\n]*)")
    return b"".join(m.group(1) + b"\n" for m in lines.finditer(b"\n" + records))


def recording(name: str) -> dict[str, tuple[str, str]]:
    """The recording as {oid: (type tag, value)}, for asserting values against the file."""
    path = recording_path(name)
    raw = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
    records: dict[str, tuple[str, str]] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        parts = line.split("|", 2)
        if len(parts) == 3:
            records[parts[0]] = (parts[1], parts[2])
    return records


def _serve_dir(work: Path, records: dict[str, bytes]) -> Path:
    """A data folder with one file per community; readable by nobody (snmpsim drops root
    before reading) and a cache folder it can write its index to."""
    data, cache = work / "data", work / "cache"
    data.mkdir()
    cache.mkdir()
    for community, text in records.items():
        path = data / f"{community}.snmprec"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
        path.chmod(0o644)
    for folder in (work, *(p for p in data.rglob("*") if p.is_dir()), data):
        folder.chmod(0o755)
    cache.chmod(0o777)
    return data


@contextmanager
def snmpsim_many(records: dict[str, bytes], host: str = "127.0.0.1", *,
                 within: float = 120.0) -> Iterator[Agent]:
    """One snmpsim process serving several recordings, each as its community (which may hold
    "/": "UPS/eaton-93e-80"). The agent returned names the first community. snmpsim indexes
    every file before it answers (~100k lines/s): ``within`` bounds that wait."""
    work = Path(tempfile.mkdtemp(prefix="hallmon-snmpsim-"))
    data = _serve_dir(work, records)
    port = free_port(host, udp=True)
    argv = [str(SIM_BIN), f"--data-dir={data}", f"--cache-dir={work / 'cache'}",
            f"--agent-udpv4-endpoint={host}:{port}", "--logging-method=stderr",
            "--log-level=error"]
    if os.geteuid() == 0:
        argv += ["--process-user=nobody", "--process-group=nogroup"]
    agent = Agent(host, port, next(iter(records)))
    try:
        with running(argv, what="snmpsim", log=work / "snmpsim.log", ready=answers(agent),
                     every=0, within=within):
            yield agent
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def snmpsim_agent(
    name: str, host: str = "127.0.0.1", *, records: bytes | None = None,
    community: str | None = None, port: int | None = None,
) -> Iterator[Agent]:
    """snmpsim serving recording ``name`` as community ``name`` on ``host``:<high port>.

    ``records`` serves edited snmprec text instead of the recording (a test's own copy);
    ``community`` and ``port`` override the defaults (several agents on one port, one per host).
    """
    community = community or name
    if records is None:
        source = recording_path(name)
        records = source.read_bytes()
        records = bz2.decompress(records) if source.suffix == ".bz2" else records
    work = Path(tempfile.mkdtemp(prefix="hallmon-snmpsim-"))
    data, cache = work / "data", work / "cache"
    data.mkdir()
    cache.mkdir()
    (data / f"{community}.snmprec").write_bytes(records)
    # nobody must read the data and write the index cache (snmpsim drops root before reading).
    os.chmod(work, 0o755)
    os.chmod(data, 0o755)
    os.chmod(data / f"{community}.snmprec", 0o644)
    os.chmod(cache, 0o777)
    port = port or free_port(host, udp=True)
    argv = [str(SIM_BIN), f"--data-dir={data}", f"--cache-dir={cache}",
            f"--agent-udpv4-endpoint={host}:{port}", "--logging-method=stderr",
            "--log-level=error"]
    if os.geteuid() == 0:
        argv += ["--process-user=nobody", "--process-group=nogroup"]
    agent = Agent(host, port, community)
    try:
        with running(argv, what="snmpsim", log=work / "snmpsim.log", ready=answers(agent),
                     every=0):
            yield agent
    finally:
        shutil.rmtree(work, ignore_errors=True)
