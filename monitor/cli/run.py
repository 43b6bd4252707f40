"""``hallmon run``, ``hallmon demo`` and ``hallmon probe``: the daemon and a technician's probe."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.inventory.load import InventoryError, load_inventory
from monitor.logs import setup as setup_logging

if TYPE_CHECKING:
    from monitor.app import Options
    from probes.result import ProbeResult

# The daemon's modules (uvicorn, pysnmp, SQLAlchemy...) are imported inside the commands that
# need them, so `hallmon check` stays quick.

log = logging.getLogger("hallmon")

DEFAULT_LISTEN = "127.0.0.1:10025"


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _traps_listen(value: str) -> tuple[str, int] | None:
    """``HOST[:PORT]`` (port 162 when left out), ``[::]:162`` for IPv6, or ``off``."""
    if value.strip().lower() in ("", "off"):
        return None
    if value.startswith("[") and "]" in value:
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":") or "162"
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, "162"
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST[:PORT] or 'off', got {value!r}")
    return host, int(port)


def _seconds(value: str) -> float:
    try:
        got = float(value)
    except ValueError:
        got = -1.0
    if not 0 < got <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 3600], got {value!r}")
    return got


def _shard(value: str) -> tuple[int, int]:
    i, _, n = value.partition("/")
    if not (i.isdigit() and n.isdigit()) or not 0 <= int(i) < int(n):
        raise argparse.ArgumentTypeError(f"expected i/n with 0 <= i < n, got {value!r}")
    return int(i), int(n)


def _common(p: argparse.ArgumentParser, *, inventory_default: str = "inventory.yaml") -> None:
    p.add_argument("--inventory", default=inventory_default, help="inventory file")
    p.add_argument(
        "--web.listen-address", dest="listen", type=_listen, default=_listen(DEFAULT_LISTEN),
        help=f"address for /metrics and the API (default {DEFAULT_LISTEN})",
    )
    p.add_argument("--log.level", dest="log_level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--log.format", dest="log_format", default="logfmt",
                   choices=["logfmt", "json"])


def add_run_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="run the monitoring daemon")
    _common(run)
    run.add_argument("--storage.url", dest="storage_url", default=os.environ.get("HALLMON_DB"),
                     help="SQLAlchemy URL (default: $HALLMON_DB, else SQLite in --storage.path)")
    run.add_argument("--storage.path", dest="state_dir", default="state",
                     help="state directory for the default SQLite database")
    run.add_argument("--mock", action="store_true",
                     help="replace every probe by the mock probe (inventory's simulation)")
    run.add_argument("--auth.tokens-file", dest="tokens_file", default=None,
                     help="API tokens with roles (viewer, technician, admin); see README")
    run.add_argument("--auth.closed-reads", dest="open_reads", action="store_false",
                     help="reads need a viewer token too (default: reads are open)")
    run.add_argument("--auth.no-local-trust", dest="local_trust", action="store_false",
                     help="without a tokens file, refuse /-/reload and re-checks to everyone "
                          "(default: accepted from 127.0.0.1, which is anyone behind a reverse "
                          "proxy on this machine)")
    run.add_argument("--shard", type=_shard, default=None,
                     help="poll only shard i of n (stable hash of the device id); a pinned, "
                     "static assignment: no lease, no take-over (see --ha.lease)")
    run.add_argument("--traps.listen-address", dest="traps_listen", type=_traps_listen,
                     default=None, metavar="HOST[:PORT]",
                     help="receive SNMP traps/informs on this UDP address (port 162 when left "
                          "out; below 1024 needs CAP_NET_BIND_SERVICE). Default: off")
    run.add_argument("--ha.lease", dest="ha_lease", type=_seconds, default=15.0,
                     help="pollers sharing one PostgreSQL: seconds a poller's lease lasts "
                     "without a heartbeat; a dead poller's devices move after about "
                     "the lease plus one poll interval (default 15)")
    run.add_argument("--ha.heartbeat", dest="ha_heartbeat", type=_seconds, default=5.0,
                     help="seconds between lease renewals (default 5; must be under half of "
                     "--ha.lease, a third leaves room for one late renewal)")
    run.add_argument("--ha.poller-id", dest="poller_id", default=None,
                     help="this poller's name in the lease table (default host:port; keep it "
                     "stable across restarts)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="the daemon on the shipped hall, with a scripted day")
    _common(demo)
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--pace", type=float, default=2.0,
                      help="poll every check at least this often, in seconds (default 2)")
    demo.add_argument("--keep-state", dest="keep_state", action="store_true",
                      help="keep the demo's state directory (its tickets, incidents and admin "
                      "token) after it stops; by default it is removed")
    demo.set_defaults(func=cmd_demo)

    recheck = sub.add_parser(
        "recheck", help="ask the running daemon to re-check a device now (its state updates)"
    )
    recheck.add_argument("device")
    recheck.add_argument("--web.url", dest="url", default=f"http://{DEFAULT_LISTEN}",
                         help="the daemon's address (default %(default)s)")
    recheck.add_argument("--token-file", default=None,
                         help="a technician token (needed when the daemon has a tokens file); "
                              "or $HALLMON_TOKEN")
    recheck.set_defaults(func=cmd_recheck)

    probe = sub.add_parser("probe", help="run every check of one device now")
    probe.add_argument("device")
    probe.add_argument("--inventory", default="inventory.yaml")
    probe.add_argument("--json", action="store_true", help="print JSON")
    probe.set_defaults(func=cmd_probe)


# -- run / demo -----------------------------------------------------------------------------


async def serve(options: Options, listen: tuple[str, int], duration: float | None = None) -> int:
    import uvicorn

    from monitor.api.auth import Auth, AuthError
    from monitor.app import Hall
    from monitor.store import StoreError
    from monitor.web import create_app
    from probes.icmp import IcmpPermissionError

    class _Server(uvicorn.Server):
        """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT/SIGHUP."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    hall = Hall(options)
    try:
        await hall.start()
    except (InventoryError, StoreError, IcmpPermissionError) as exc:
        # inventory problems stay FILE:LINE:COL lines (editors jump to them)
        print(exc if isinstance(exc, InventoryError) else f"hallmon: {exc}", file=sys.stderr)
        await hall.stop()
        return 1
    except OSError as exc:  # the trap receiver's address: taken, or privileged without the cap
        host, port = options.traps_listen or ("?", 0)
        print(f"hallmon: cannot receive traps on {host}:{port}: {exc.strerror or exc}"
              " (use a free address, or grant CAP_NET_BIND_SERVICE for ports below 1024)",
              file=sys.stderr)
        await hall.stop()
        return 1
    try:
        auth = Auth.from_file(options.tokens_file, open_reads=options.open_reads) \
            if options.tokens_file else None
    except AuthError as exc:
        print(exc, file=sys.stderr)
        await hall.stop()
        return 1
    if auth is None:
        log.warning("no --auth.tokens-file: the API is read-only (tickets cannot be written)")
        if options.local_trust:
            log.warning("no --auth.tokens-file: /-/reload and re-checks are accepted from any "
                        "connection from this machine; behind a reverse proxy here that is "
                        "anyone: give --auth.tokens-file or --auth.no-local-trust")
    app = create_app(hall, site_name=hall.inventory.site.name, store=hall.astore, auth_=auth,
                     local_trust=options.local_trust)
    config = uvicorn.Config(app, host=listen[0], port=listen[1], log_config=None,
                            access_log=False, lifespan="off")
    server = _Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def serve_web() -> None:
        try:
            await server.serve()
        except SystemExit as exc:
            # uvicorn calls sys.exit when it cannot listen (port in use); as SystemExit it would
            # leave asyncio.run at once, skipping hall.stop() (store not closed).
            log.error("cannot serve on %s:%d; stopping", *listen)
            raise RuntimeError("web server failed to start") from exc

    web = asyncio.create_task(serve_web())
    log.info("listening on http://%s:%d/", *listen)
    waiters = [asyncio.create_task(stop.wait()), web]
    if duration is not None:
        waiters.append(asyncio.create_task(asyncio.sleep(duration)))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    server.should_exit = True
    await asyncio.gather(web, return_exceptions=True)
    for w in waiters:
        w.cancel()
    await hall.stop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    return 0 if web.exception() is None else 1


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.app import Options

    setup_logging(args.log_level, args.log_format)
    options = Options(
        inventory=Path(args.inventory),
        listen=f"{args.listen[0]}:{args.listen[1]}",
        storage_url=args.storage_url,
        state_dir=Path(args.state_dir),
        mock=args.mock,
        tokens_file=Path(args.tokens_file) if args.tokens_file else None,
        open_reads=args.open_reads,
        local_trust=args.local_trust,
        shard=args.shard,
        traps_listen=args.traps_listen,
        ha_lease=args.ha_lease,
        ha_heartbeat=args.ha_heartbeat,
        poller_id=args.poller_id,
    )
    if args.ha_heartbeat * 2 >= args.ha_lease:
        raise SystemExit(f"--ha.heartbeat {args.ha_heartbeat:g} must be under half of "
                         f"--ha.lease {args.ha_lease:g} (a late heartbeat must not lose the lease)")
    return asyncio.run(serve(options, args.listen))


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.app import Options

    setup_logging(args.log_level, args.log_format)
    state = Path(tempfile.mkdtemp(prefix="hallmon-demo-"))
    host, port = args.listen
    token = secrets.token_urlsafe(18)
    tokens = state / "tokens.yaml"
    tokens.write_text(f"tokens:\n  - {{name: demo, role: admin, token: {token}}}\n")
    tokens.chmod(0o600)
    from monitor.store import Store, sqlite_url

    accounts = Store(sqlite_url(state))  # the pages' sign-in: demo / the token
    accounts.add_user("demo", "admin", token)
    accounts.close()
    print(
        f"hallmon demo: the shipped hall with mock probes and a scripted day.\n"
        f"  metrics   http://{host}:{port}/metrics\n"
        f"  devices   http://{host}:{port}/api/v1/devices\n"
        f"  tickets   http://{host}:{port}/api/v1/tickets\n"
        f"  pages     http://{host}:{port}/status  http://{host}:{port}/tickets"
        " (sign in: demo / the token)\n"
        f"  state     {state}   (removed at exit unless --keep-state)\n"
        f"  token     {token}   (admin, for writes: -H 'Authorization: Bearer ...')\n"
        "Watch the console: a floor switch fails ~20 s in, its children go unreachable;\n"
        "a line flaps, a printer runs low on toner, a camera dies, a UPS goes on battery.\n",
        file=sys.stderr,
    )
    options = Options(
        inventory=Path(args.inventory), listen=f"{host}:{port}", state_dir=state, mock=True,
        pace=args.pace, tokens_file=tokens,
    )
    try:
        return asyncio.run(serve(options, args.listen, args.duration))
    finally:  # a throwaway hall: no database and admin token left behind in /tmp
        if args.keep_state:
            print(f"hallmon demo: state kept in {state}", file=sys.stderr)
        else:
            shutil.rmtree(state, ignore_errors=True)


# -- recheck --------------------------------------------------------------------------------


def cmd_recheck(args: argparse.Namespace) -> int:
    import httpx

    token = os.environ.get("HALLMON_TOKEN")
    if args.token_file:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{args.url.rstrip('/')}/api/v1/devices/{args.device}/recheck"
    try:
        reply = httpx.post(url, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        print(f"cannot reach hallmon at {args.url}: {exc}", file=sys.stderr)
        return 1
    if reply.status_code != 202:
        try:
            detail = reply.json().get("detail", reply.text)
        except ValueError:
            detail = reply.text or reply.reason_phrase
        print(f"{args.device}: {reply.status_code} {detail}", file=sys.stderr)
        return 1
    print(f"{args.device}: re-check queued; see /api/v1/devices/{args.device}")
    return 0


# -- probe ----------------------------------------------------------------------------------


async def _probe_device(inventory_path: str, device_id: str) -> list[tuple[str, str, ProbeResult]]:
    from monitor.checks import probe_call
    from monitor.conditions import evaluate
    from probes import close_all, icmp
    from probes.icmp import IcmpPermissionError
    from probes.result import ProbeResult

    inventory = load_inventory(Path(inventory_path))
    device = inventory.device(device_id)
    if any(c.kind == "icmp" for c in inventory.checks_for(device)):
        try:
            icmp.configure(backend=inventory.polling.icmp_backend)
            icmp.privileges()
        except IcmpPermissionError as exc:  # the ping check fails; say why and how to fix it
            print(f"hallmon: {exc}", file=sys.stderr)
    out = []
    try:
        for check in inventory.checks_for(device):
            if check.kind in ("push", "trap"):
                continue  # nothing to ask: these devices speak first
            call = probe_call(inventory, device, check)
            start = time.monotonic()
            try:
                async with asyncio.timeout(check.timeout):
                    result = await call()
            except TimeoutError:
                result = ProbeResult.failure(time.monotonic() - start, "timeout")
            out.append((check.name, check.kind, evaluate(check, result)))
    finally:
        await close_all()
    return out


def cmd_probe(args: argparse.Namespace) -> int:
    try:
        results = asyncio.run(_probe_device(args.inventory, args.device))
    except InventoryError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyError:
        print(f"{args.inventory}: unknown device {args.device!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(
            {
                "device": args.device,
                "checks": [
                    {"check": n, "kind": k, "ok": r.ok, "error": r.error,
                     "duration_seconds": round(r.duration, 6), "values": dict(r.values),
                     "texts": dict(r.texts), "errors": dict(r.errors)}
                    for n, k, r in results
                ],
            },
            ensure_ascii=False, indent=2,
        ))
    else:
        print(f"{'CHECK':<12} {'KIND':<6} {'RESULT':<6} {'TIME':>9}  DETAIL")
        for name, kind, r in results:
            detail = r.error or ", ".join(f"{k}={v:g}" for k, v in sorted(r.values.items())[:6])
            state = "ok" if r.ok else "FAIL"
            print(f"{name:<12} {kind:<6} {state:<6} {r.duration * 1000:>7.1f}ms  {detail}")
    return 0 if all(r.ok for _, _, r in results) else 2
