"""The simulated hall: mock probes scripted from the inventory's ``simulation:`` section.

``hallmon demo`` and ``hallmon run --mock`` replace every probe with :mod:`probes.mock`; this
module turns the inventory's faults into mock programs (times count from the start of the run)
and gives every SNMP check the values a healthy device of its class would report, so a printer
shows its toner and a UPS its charge before anything goes wrong.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from monitor.inventory import Fault, Inventory, ResolvedCheck
from probes.mock import MOCK, MockController, Phase

# What a healthy device of a class answers, by check name (the classes.py profile's values).
HEALTHY: Mapping[str, Mapping[str, float]] = {
    "snmp": {"sys_uptime_seconds": 123_456.0},
    "supplies": {
        "supply_level": 80.0,
        "supply_max": 100.0,
        "pages": 123_456.0,
        "cover_status": 4.0,
        "printer_status": 3.0,
    },
    "ups": {
        "battery_status": 2.0,
        "seconds_on_battery": 0.0,
        "runtime_remaining_seconds": 2700.0,
        "charge_percent": 100.0,
        "output_source": 3.0,
    },
    "host": {"cpu_load_percent.1": 12.0, "storage_used_units.1": 4_000_000.0,
             "storage_size_units.1": 12_000_000.0},
    "disks": {"disk_status.1": 0.0, "disk_status.2": 0.0},
    "ports": {"if_oper_status.1": 1.0, "if_hc_in_octets.1": 1.0e9, "if_hc_out_octets.1": 2.0e9,
              "if_in_errors.1": 0.0, "if_out_errors.1": 0.0},
}


def healthy_values(check: ResolvedCheck) -> Mapping[str, float]:
    return HEALTHY.get(check.name, {}) if check.kind == "snmp" else {}


def _phases(faults: list[Fault]) -> list[Phase]:
    phases = [Phase("up", at=0.0)]
    for f in sorted(faults, key=lambda f: f.at):
        mode = "up" if f.mode == "values" else f.mode
        phases.append(Phase(mode, at=float(f.at), values=dict(f.values)))
        if f.duration is not None:
            phases.append(Phase("up", at=float(f.at) + f.duration))
    return phases


def _descendants(device: str, children: Mapping[str, list[str]]) -> list[str]:
    out, todo = [], list(children.get(device, ()))
    while todo:
        d = todo.pop()
        out.append(d)
        todo.extend(children.get(d, ()))
    return out


def install(inventory: Inventory, controller: MockController = MOCK) -> int:
    """Program the mock probe with the inventory's faults; returns how many were scripted."""
    controller.clear()
    if inventory.simulation is None:
        return 0
    controller.seed = inventory.simulation.seed
    children: dict[str, list[str]] = defaultdict(list)
    for d in inventory.devices:
        if d.parent is not None:
            children[d.parent].append(d.id)
    grouped: dict[tuple[str, str | None], list[Fault]] = defaultdict(list)
    for fault in inventory.simulation.faults:
        grouped[(fault.device, fault.check)].append(fault)
        if fault.check is None and fault.mode in ("down", "timeout"):
            # A dead switch takes the network path of everything behind it: their probes
            # fail too (the state layer then calls them unreachable, not down).
            for below in _descendants(fault.device, children):
                grouped[(below, None)].append(fault.model_copy(update={"device": below}))
    for (device_id, check), faults in grouped.items():
        device = inventory.device(device_id)
        controller.script(device.address, _phases(faults), check=check)
    return len(inventory.simulation.faults)
