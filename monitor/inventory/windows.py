"""Which inventory maintenance window (a device's own or a hall-wide one) holds a device now."""

from __future__ import annotations

from datetime import datetime

from monitor.inventory.models import Device, Inventory, MaintenanceWindow, parse_schedule


def active_window(inventory: Inventory, device: Device, now: datetime) -> MaintenanceWindow | None:
    """The first window of the inventory that selects ``device`` and is active at ``now``
    (aware); its ``reason`` is what the status board shows."""
    tz = inventory.site.tz
    local = now.astimezone(tz)
    windows = [(w, True) for w in device.maintenance]
    windows += [
        (w, device.id in w.devices
         or device.class_ in w.classes
         or device.location.floor in w.floors)
        for w in inventory.maintenance
    ]
    for w, selected in windows:
        if not selected:
            continue
        if w.schedule is not None:
            active = any(span.contains(local) for span in parse_schedule(w.schedule))
        else:
            assert w.start is not None and w.end is not None
            start = w.start if w.start.tzinfo else w.start.replace(tzinfo=tz)
            end = w.end if w.end.tzinfo else w.end.replace(tzinfo=tz)
            active = start <= now < end
        if active:
            return w
    return None
