"""SNMPv3 notifications (USM, SHA-2/AES) through pysnmp's notification receiver.

The trap receiver owns its one UDP socket and decodes v1/v2c itself (probes/snmp_trap.py); a v3
datagram is handed to pysnmp's message dispatcher here, which checks the USM user, key and
timeliness, decrypts, answers an inform (and the engine-ID discovery that precedes a v3 inform),
and calls back with the var-binds. pysnmp sends its answers through :class:`_SocketDispatcher`,
which writes to the receiver's socket: one address, as configured.

Credential rules as for polling: a user is accepted only with the auth and privacy protocols its
credential names, and only at authPriv (USM alone would also take a noAuthNoPriv message that
merely names a known user; pysnmp's notification receiver does not check the level, so we do).
A v3 trap's engine ID is the sender's (the sender is authoritative) and USM keys are localized
to it, so a user must be configured per engine ID (snmptrapd's ``createUser -e``). Rather than ask
the inventory for every device's engine ID, the receiver learns it from the message header of a
*known* sender (:meth:`V3Receiver.feed` with ``learn=True``) and localizes that user's keys once:
the message is then authenticated as usual (a forged engine ID gains nothing but costs one key
localization, so learning is bounded: ``max_engines``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from probes.snmp import _AUTH, _PRIV, Secret, SnmpAuth
from probes.snmp_ber import BerError, VarBind
from probes.snmp_trap import SNMP_TRAP_OID_0, SYS_UPTIME_0, v3_engine_and_user

AUTH_PRIV = 3  # RFC 3411 securityLevel


@dataclass(frozen=True, slots=True)
class V3Notification:
    address: tuple[str, int]
    user: str
    trap_oid: str
    uptime: int | None
    varbinds: tuple[VarBind, ...]
    is_inform: bool


Send = Callable[[bytes, tuple[str, int]], None]
Deliver = Callable[[V3Notification], None]


class V3Receiver:
    """Feed it v3 datagrams (:meth:`feed`); it calls ``deliver`` for every authentic
    authPriv notification and ``send`` for pysnmp's answers. Create inside the running loop."""

    def __init__(self, users: Sequence[SnmpAuth], send: Send, deliver: Deliver,
                 max_engines: int = 10_000) -> None:
        from pysnmp.carrier.base import AbstractTransportDispatcher
        from pysnmp.entity import config, engine
        from pysnmp.entity.rfc3413 import ntfrcv

        class _SocketDispatcher(AbstractTransportDispatcher):
            """pysnmp's outgoing messages go to the receiver's socket."""

            def send_message(self, message: Any, domain: Any, address: Any) -> None:
                send(bytes(message), (str(address[0]), int(address[1])))

        self._deliver = deliver
        self._context: dict[str, Any] = {}
        self.rejected = 0  # authentic but below authPriv
        self.engine = engine.SnmpEngine()
        self._config = config
        self._users: dict[bytes, list[SnmpAuth]] = {}
        for user in users:
            if user.version == "3" and user.user:
                self._users.setdefault(user.user.encode(), []).append(user)
                self._add_user(user, None)  # informs: keys localized to our own engine ID
        self._learned: set[tuple[bytes, bytes]] = set()
        self._max_engines = max_engines
        self._dispatcher = _SocketDispatcher()
        self.engine.register_transport_dispatcher(self._dispatcher)
        self.engine.observer.register_observer(
            self._remember, "rfc3412.receiveMessage:request"
        )
        self._receiver = ntfrcv.NotificationReceiver(self.engine, self._callback)
        from pysnmp.carrier.asyncio.dgram import udp

        self._domain = udp.DOMAIN_NAME
        self._address_type = udp.UdpTransportAddress

    def _add_user(self, user: SnmpAuth, engine_id: bytes | None) -> None:
        config = self._config
        config.add_v3_user(
            self.engine,
            user.user,
            getattr(config, _CONFIG_AUTH[_AUTH[user.auth_protocol or "sha"]]),
            _reveal(user.auth_key),
            getattr(config, _CONFIG_PRIV[_PRIV[user.priv_protocol or "aes"]]),
            _reveal(user.priv_key),
            securityEngineId=engine_id,
        )

    def feed(self, data: bytes, address: tuple[str, int], learn: bool = False) -> None:
        """One v3 datagram. Never raises: a bad message is pysnmp's counter, not our crash.
        ``learn``: the sender is a known device; localize its user for its engine ID."""
        self._context = {}
        if learn:
            try:
                engine_id, user = v3_engine_and_user(data)
            except BerError:
                return
            key = (engine_id, user)
            if engine_id and user in self._users and key not in self._learned and (
                len(self._learned) < self._max_engines
            ):
                self._learned.add(key)
                for auth in self._users[user]:
                    self._add_user(auth, engine_id)
        try:
            self.engine.message_dispatcher.receive_message(
                self.engine, self._domain, self._address_type(address), data
            )
        except Exception:
            pass

    def tick(self, now: float) -> None:
        """pysnmp's housekeeping (expiring its caches of pending informs/discoveries)."""
        self._dispatcher.handle_timer_tick(now)

    def close(self) -> None:
        self._receiver.close(self.engine)
        self.engine.unregister_transport_dispatcher()

    # -- pysnmp callbacks -------------------------------------------------------------------

    def _remember(self, engine: Any, point: str, variables: dict[str, Any], ctx: Any) -> None:
        self._context = {
            "level": variables.get("securityLevel"),
            "user": variables.get("securityName"),
            "pdu": variables.get("pdu"),
        }

    def _callback(self, engine: Any, state: Any, context_engine: Any, context_name: Any,
                  varbinds: Any, ctx: Any) -> None:
        if self._context.get("level") != AUTH_PRIV:
            self.rejected += 1
            return
        domain, address = engine.message_dispatcher.get_transport_info(state)
        plain = tuple(_plain(name, value) for name, value in varbinds)
        uptime = next((v for n, t, v in plain if n == SYS_UPTIME_0 and isinstance(v, int)), None)
        trap_oid = next((v for n, t, v in plain if n == SNMP_TRAP_OID_0 and isinstance(v, str)),
                        None)
        if trap_oid is None:
            self.rejected += 1
            return
        pdu = self._context.get("pdu")
        inform = pdu is not None and pdu.__class__.__name__ == "InformRequestPDU"
        rest = tuple(v for v in plain if v[0] not in (SYS_UPTIME_0, SNMP_TRAP_OID_0))
        self._deliver(V3Notification((str(address[0]), int(address[1])),
                                     str(self._context.get("user") or ""), trap_oid, uptime,
                                     rest, inform))


def _reveal(key: object) -> str | None:
    return key.get() if isinstance(key, Secret) else None


def _plain(name: Any, value: Any) -> VarBind:
    """A pysnmp var-bind as the BER codec's (dotted OID, tag, plain value)."""
    tag_obj = value.tagSet[-1]
    tag = int(tag_obj.tagClass | tag_obj.tagFormat | tag_obj.tagId)
    oid = ".".join(str(a) for a in tuple(name))
    if tag in (0x04, 0x40, 0x44):  # OCTET STRING, IpAddress, Opaque
        return oid, tag, bytes(value.asOctets())
    if tag == 0x06:
        return oid, tag, ".".join(str(a) for a in tuple(value))
    if tag in (0x05, 0x80, 0x81, 0x82):
        return oid, tag, None
    return oid, tag, int(value)


# probes.snmp names pysnmp's hlapi protocol objects; the entity config names the same services.
_CONFIG_AUTH = {
    "usmHMACSHAAuthProtocol": "USM_AUTH_HMAC96_SHA",
    "usmHMAC128SHA224AuthProtocol": "USM_AUTH_HMAC128_SHA224",
    "usmHMAC192SHA256AuthProtocol": "USM_AUTH_HMAC192_SHA256",
    "usmHMAC256SHA384AuthProtocol": "USM_AUTH_HMAC256_SHA384",
    "usmHMAC384SHA512AuthProtocol": "USM_AUTH_HMAC384_SHA512",
}
_CONFIG_PRIV = {
    "usmAesCfb128Protocol": "USM_PRIV_CFB128_AES",
    "usmAesCfb192Protocol": "USM_PRIV_CFB192_AES",
    "usmAesCfb256Protocol": "USM_PRIV_CFB256_AES",
}
