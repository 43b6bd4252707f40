"""Built-in device-class profiles: which checks, OIDs and conditions each class of device gets.

A profile is plain inventory data (:class:`~monitor.inventory.DeviceClass`); the inventory's own
``classes:`` section overrides a built-in class of the same name whole. Numeric OIDs only (no MIB
loading at run time); the MIB object each one reads is named beside it.

A *condition* that holds marks its check failed, and a failed health check makes the device
DEGRADED once hard (toner low, UPS on battery, NVR disk error, line loss...).
"""

from __future__ import annotations

from typing import Any

# ---- OIDs (numeric; MIB object in the comment) ----------------------------------------------
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"  # SNMPv2-MIB::sysUpTime (TimeTicks, wraps after ~497 days)
IF_OPER_STATUS = "1.3.6.1.2.1.2.2.1.8"  # IF-MIB::ifOperStatus (1 up, 2 down)
IF_IN_ERRORS = "1.3.6.1.2.1.2.2.1.14"  # IF-MIB::ifInErrors
IF_OUT_ERRORS = "1.3.6.1.2.1.2.2.1.20"  # IF-MIB::ifOutErrors
IF_HC_IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6"  # IF-MIB::ifHCInOctets (Counter64)
IF_HC_OUT_OCTETS = "1.3.6.1.2.1.31.1.1.1.10"  # IF-MIB::ifHCOutOctets (Counter64)
HW_CPU = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.5"  # HUAWEI-ENTITY-EXTENT-MIB::hwEntityCpuUsage
HW_TEMP = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.11"  # HUAWEI-ENTITY-EXTENT-MIB::hwEntityTemperature
H3C_CPU = "1.3.6.1.4.1.25506.2.6.1.1.1.1.6"  # HH3C-ENTITY-EXT-MIB::hh3cEntityExtCpuUsage
H3C_TEMP = "1.3.6.1.4.1.25506.2.6.1.1.1.1.12"  # HH3C-ENTITY-EXT-MIB::hh3cEntityExtTemperature
ENT_SENSOR = "1.3.6.1.2.1.99.1.1.1.4"  # ENTITY-SENSOR-MIB::entPhySensorValue
HR_PROC_LOAD = "1.3.6.1.2.1.25.3.3.1.2"  # HOST-RESOURCES-MIB::hrProcessorLoad
HR_STORAGE_SIZE = "1.3.6.1.2.1.25.2.3.1.5"  # HOST-RESOURCES-MIB::hrStorageSize
HR_STORAGE_USED = "1.3.6.1.2.1.25.2.3.1.6"  # HOST-RESOURCES-MIB::hrStorageUsed
PRT_SUPPLY_LEVEL = "1.3.6.1.2.1.43.11.1.1.9.1.1"  # Printer-MIB::prtMarkerSuppliesLevel.1.1
PRT_SUPPLY_MAX = "1.3.6.1.2.1.43.11.1.1.8.1.1"  # Printer-MIB::prtMarkerSuppliesMaxCapacity.1.1
PRT_PAGES = "1.3.6.1.2.1.43.10.2.1.4.1.1"  # Printer-MIB::prtMarkerLifeCount.1.1
PRT_COVER = "1.3.6.1.2.1.43.6.1.1.3.1.1"  # Printer-MIB::prtCoverStatus.1.1 (3 open, 4 closed)
HR_PRINTER_STATUS = "1.3.6.1.2.1.25.3.5.1.1.1"  # HOST-RESOURCES-MIB::hrPrinterStatus.1
UPS_BATTERY_STATUS = "1.3.6.1.2.1.33.1.2.1.0"  # UPS-MIB::upsBatteryStatus (2 normal, 3 low)
UPS_SECONDS_ON_BATTERY = "1.3.6.1.2.1.33.1.2.2.0"  # UPS-MIB::upsSecondsOnBattery
UPS_MINUTES_LEFT = "1.3.6.1.2.1.33.1.2.3.0"  # UPS-MIB::upsEstimatedMinutesRemaining
UPS_CHARGE = "1.3.6.1.2.1.33.1.2.4.0"  # UPS-MIB::upsEstimatedChargeRemaining (percent)
UPS_OUTPUT_SOURCE = "1.3.6.1.2.1.33.1.4.1.0"  # UPS-MIB::upsOutputSource (3 normal, 5 battery)
HIK_CPU = "1.3.6.1.4.1.39165.1.7.0"  # HIK-DEVICE-MIB cpuPercent, OctetString "52 PERCENT"
HIK_MEM = "1.3.6.1.4.1.39165.1.11.0"  # HIK-DEVICE-MIB memUsed, OctetString "75 PERCENT"
NVR_DISK_STATUS = "1.3.6.1.4.1.50001.1.241.1.3"  # Hikvision NVR disk table: status (0 normal)


def _ping(packets: int = 3, **extra: Any) -> dict[str, Any]:
    return {"name": "ping", "kind": "icmp", "role": "reachability", "packets": packets, **extra}


def _tcp(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "tcp", "port": port, **extra}


def _cond(value: str, op: str, threshold: float, message: str, severity: str = "warning") -> dict:
    return {"value": value, "op": op, "threshold": threshold, "message": message,
            "severity": severity}


# TimeTicks are hundredths of a second; the metric is in seconds (base units).
_UPTIME = {"oid": SYS_UPTIME, "scale": 0.01}

_PORTS = {
    "name": "ports",
    "kind": "snmp",
    "interval": "5m",
    "timeout": "20s",
    "walks": {
        "if_oper_status": IF_OPER_STATUS,
        "if_in_errors": {"oid": IF_IN_ERRORS, "type": "counter"},
        "if_out_errors": {"oid": IF_OUT_ERRORS, "type": "counter"},
        "if_hc_in_octets": {"oid": IF_HC_IN_OCTETS, "type": "counter"},
        "if_hc_out_octets": {"oid": IF_HC_OUT_OCTETS, "type": "counter"},
    },
}

# ---- trap rules (what a device's own notifications mean; see TrapRule) ---------------------
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"  # IF-MIB::linkDown (v1: generic-trap 2)
LINK_UP = "1.3.6.1.6.3.1.1.5.4"  # IF-MIB::linkUp (v1: generic-trap 3)
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"  # IF-MIB::ifIndex, a var-bind of both
UPS_TRAP_ON_BATTERY = "1.3.6.1.2.1.33.2.0.1"  # UPS-MIB::upsTrapOnBattery (repeated every minute)
UPS_TRAP_ALARM_ADDED = "1.3.6.1.2.1.33.2.0.3"  # UPS-MIB::upsTrapAlarmEntryAdded
UPS_TRAP_ALARM_REMOVED = "1.3.6.1.2.1.33.2.0.4"  # UPS-MIB::upsTrapAlarmEntryRemoved
UPS_ALARM_DESCR = "1.3.6.1.2.1.33.1.6.2.1.2"  # UPS-MIB::upsAlarmDescr (var-bind of both)
UPS_ALARM_ON_BATTERY = "1.3.6.1.2.1.33.1.6.3.2"  # UPS-MIB::upsAlarmOnBattery
UPS_ALARM_LOW_BATTERY = "1.3.6.1.2.1.33.1.6.3.3"  # UPS-MIB::upsAlarmLowBattery
COLD_START = "1.3.6.1.6.3.1.1.5.1"  # SNMPv2-MIB::coldStart (v1: generic-trap 0)
WARM_START = "1.3.6.1.6.3.1.1.5.2"  # SNMPv2-MIB::warmStart (v1: generic-trap 1)

# A restart is news, not a fault: an event in the device's history and a fresh look at it.
_RESTART_RULES = [
    {"name": "cold-start", "oid": COLD_START, "action": "event",
     "message": "设备重新启动（冷启动）", "also_recheck": True},
    {"name": "warm-start", "oid": WARM_START, "action": "event",
     "message": "设备重新启动（热启动）", "also_recheck": True},
]
# A switch or router port going down degrades the device until linkUp of the same ifIndex (or an
# hour without news); a port coming up asks for a fresh poll of the device.
# A restart (coldStart/warmStart carry no ifIndex) ends every link condition: the device counts
# its links afresh and sends linkDown again for those still down.
_LINK_CLEARED_BY = [LINK_UP, COLD_START, WARM_START]
_PORT_RULES = [
    {"name": "link-down", "oid": LINK_DOWN, "action": "degraded", "message": "端口断开",
     "instance": IF_INDEX, "cleared_by": _LINK_CLEARED_BY, "hold": "1h", "also_recheck": True},
    *_RESTART_RULES,
]
# An end device that reports its own link down is cut off (it told us over another path, or
# just before going quiet): DOWN, told once together with the ping that fails after it.
_OWN_LINK_RULES = [
    {"name": "link-down", "oid": LINK_DOWN, "action": "down", "message": "设备网络链路断开",
     "instance": IF_INDEX, "cleared_by": _LINK_CLEARED_BY, "hold": "10m",
     "also_recheck": True},
    *_RESTART_RULES,
]
# UPS-MIB (RFC 1628): upsTrapOnBattery is repeated each minute while on battery, so the hold is
# short and the condition ends by itself a few minutes after utility power returns; the alarm
# table traps add and remove upsAlarmOnBattery / upsAlarmLowBattery explicitly.
_UPS_RULES = [
    {"name": "on-battery", "oid": UPS_TRAP_ON_BATTERY, "action": "degraded",
     "message": "UPS市电中断，电池供电中", "hold": "3m",
     "cleared_by": [{"oid": UPS_TRAP_ALARM_REMOVED,
                     "when": [{"oid": UPS_ALARM_DESCR, "value": UPS_ALARM_ON_BATTERY}]}]},
    {"name": "on-battery-alarm", "oid": UPS_TRAP_ALARM_ADDED, "action": "degraded",
     "when": [{"oid": UPS_ALARM_DESCR, "value": UPS_ALARM_ON_BATTERY}],
     "message": "UPS市电中断，电池供电中", "hold": "4h",
     "cleared_by": [{"oid": UPS_TRAP_ALARM_REMOVED,
                     "when": [{"oid": UPS_ALARM_DESCR, "value": UPS_ALARM_ON_BATTERY}]}]},
    {"name": "battery-low", "oid": UPS_TRAP_ALARM_ADDED, "action": "degraded",
     "when": [{"oid": UPS_ALARM_DESCR, "value": UPS_ALARM_LOW_BATTERY}],
     "message": "UPS电池电量低，即将断电", "hold": "4h", "also_recheck": True,
     "cleared_by": [{"oid": UPS_TRAP_ALARM_REMOVED,
                     "when": [{"oid": UPS_ALARM_DESCR, "value": UPS_ALARM_LOW_BATTERY}]}]},
    *_RESTART_RULES,
]

PROFILES: dict[str, dict[str, Any]] = {
    "switch": {
        "label": "交换机",
        "trap_rules": _PORT_RULES,
        "checks": [
            _ping(),
            {
                "name": "snmp",
                "kind": "snmp",
                "oids": {"sys_uptime_seconds": _UPTIME},
                "walks": {
                    "huawei_cpu_percent": HW_CPU,
                    "huawei_temperature_celsius": HW_TEMP,
                    "h3c_cpu_percent": H3C_CPU,
                    # 65535: this entity (a port, a fan...) has no sensor; 211 of the rows in
                    # snmpsim-data's H3C recordings (tests/test_recordings.py)
                    "h3c_temperature_celsius": {"oid": H3C_TEMP, "absent": [65535]},
                    # raw, as entPhySensorScale/Precision of the same row say (vendor-neutral)
                    "entity_sensor_value": ENT_SENSOR,
                },
                "conditions": [
                    _cond("huawei_cpu_percent.*", ">", 90, "交换机CPU使用率过高"),
                    _cond("huawei_temperature_celsius.*", ">", 70, "交换机温度过高"),
                    _cond("h3c_cpu_percent.*", ">", 90, "交换机CPU使用率过高"),
                    _cond("h3c_temperature_celsius.*", ">", 70, "交换机温度过高"),
                ],
            },
            _PORTS,
        ],
    },
    "router": {
        "label": "路由器",
        "trap_rules": _PORT_RULES,
        "checks": [
            _ping(),
            {"name": "snmp", "kind": "snmp", "oids": {"sys_uptime_seconds": _UPTIME}},
            _PORTS,
        ],
    },
    # A wireless LAN controller (Aruba, Cisco WLC, H3C WX, Huawei ACU, Ruijie WS...): up, and
    # its ports; the access points behind it are devices of their own.
    "wireless_controller": {
        "label": "无线控制器",
        "trap_rules": _PORT_RULES,
        "checks": [
            _ping(),
            {"name": "snmp", "kind": "snmp", "oids": {"sys_uptime_seconds": _UPTIME}},
            _PORTS,
        ],
    },
    "line": {
        "label": "专线",
        "line": True,
        "checks": [
            _ping(
                packets=10,
                packet_interval="100ms",
                conditions=[
                    _cond("loss_ratio", ">", 0.2, "专线丢包率超过20%"),
                    _cond("rtt_avg_seconds", ">", 0.1, "专线时延超过100毫秒"),
                ],
            )
        ],
    },
    "firewall": {"label": "上网行为管理", "checks": [_ping(), _tcp("https", 443)]},
    "kiosk": {
        "label": "自助终端",
        "trap_rules": _OWN_LINK_RULES,
        "checks": [
            _ping(),
            {
                "name": "host",
                "kind": "snmp",
                "interval": "1m",
                "walks": {
                    "cpu_load_percent": HR_PROC_LOAD,
                    "storage_size_units": HR_STORAGE_SIZE,
                    "storage_used_units": HR_STORAGE_USED,
                },
                "conditions": [_cond("cpu_load_percent.*", ">", 95, "自助终端CPU持续满载")],
            },
        ],
    },
    "led_controller": {"label": "LED屏控制器", "checks": [_ping(), _tcp("control", 5200)],
                      "trap_rules": _OWN_LINK_RULES},
    "queue_display": {"label": "排队叫号屏", "checks": [_ping(), _tcp("service", 8000)],
                     "trap_rules": _OWN_LINK_RULES},
    "camera": {"label": "摄像机", "checks": [_ping(), _tcp("rtsp", 554)],
              "trap_rules": _OWN_LINK_RULES},
    "nvr": {
        "label": "硬盘录像机",
        "trap_rules": _OWN_LINK_RULES,
        "checks": [
            _ping(),
            _tcp("rtsp", 554),
            {
                "name": "disks",
                "kind": "snmp",
                "interval": "1m",
                "walks": {"disk_status": NVR_DISK_STATUS},
                "conditions": [_cond("disk_status.*", "!=", 0, "录像机硬盘异常", "critical")],
            },
        ],
    },
    "access_gate": {"label": "门禁闸机", "checks": [_ping(), _tcp("controller", 4370)]},
    "printer": {
        "label": "打印机",
        "checks": [
            _ping(),
            {
                "name": "supplies",
                "kind": "snmp",
                "interval": "5m",
                "timeout": "10s",
                "oids": {
                    "supply_level": PRT_SUPPLY_LEVEL,
                    "supply_max": PRT_SUPPLY_MAX,
                    "pages": {"oid": PRT_PAGES, "type": "counter"},
                    "cover_status": PRT_COVER,
                    "printer_status": HR_PRINTER_STATUS,
                },
                "ratios": {"toner_percent": {"numerator": "supply_level",
                                             "denominator": "supply_max"}},
                "conditions": [
                    _cond("toner_percent", "<", 10, "碳粉不足10%"),
                    _cond("cover_status", "==", 3, "打印机盖板打开"),
                ],
            },
        ],
    },
    "ups": {
        "label": "UPS电源",
        "trap_rules": _UPS_RULES,
        "checks": [
            _ping(),
            {
                "name": "ups",
                "kind": "snmp",
                "oids": {
                    "battery_status": UPS_BATTERY_STATUS,
                    "seconds_on_battery": UPS_SECONDS_ON_BATTERY,
                    # -1: "unknown" on Huawei's UPS5000 card (outside the MIB's ranges)
                    "runtime_remaining_seconds": {"oid": UPS_MINUTES_LEFT, "scale": 60,
                                                  "absent": [-1]},
                    "charge_percent": {"oid": UPS_CHARGE, "absent": [-1]},
                    "output_source": UPS_OUTPUT_SOURCE,
                },
                "conditions": [
                    _cond("output_source", "==", 5, "UPS市电中断，电池供电中", "critical"),
                    _cond("battery_status", ">=", 3, "UPS电池电量低", "critical"),
                ],
            },
        ],
    },
    "ip_phone": {"label": "IP电话", "checks": [_ping()]},
    "voice_gateway": {"label": "语音网关", "checks": [_ping(), _tcp("sip", 5060)]},
}

# The optional vendor check of Hikvision cameras (class camera_hikvision; HIK-DEVICE-MIB reports
# "52 PERCENT" strings; parse: number takes the leading number).
HIKVISION_CAMERA_SNMP: dict[str, Any] = {
    "name": "hik",
    "kind": "snmp",
    "interval": "1m",
    "oids": {
        "cpu_percent": {"oid": HIK_CPU, "parse": "number"},
        "memory_percent": {"oid": HIK_MEM, "parse": "number"},
    },
}

# The camera profile with the optional vendor check, as its own class.
PROFILES["camera_hikvision"] = {
    "label": "摄像机（海康）",
    "checks": [*PROFILES["camera"]["checks"], HIKVISION_CAMERA_SNMP],
    "trap_rules": _OWN_LINK_RULES,
}
