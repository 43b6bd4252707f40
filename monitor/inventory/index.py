"""Look-ups into one inventory by id and by the attributes the API filters on.

Built once per inventory (start-up and each reload, by the pipeline) so that a request costs what
it returns: ``Inventory.device`` scans the device list and ``checks_for`` resolves a device's
checks on every call, which at 10k devices made a device list O(devices x checks) (issue 12).
Pure and read-only once built: request handlers on the event loop share it without locks.
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.inventory.models import Device, Inventory, ResolvedCheck


class DeviceIndex:
    """Positions (inventory order) of the devices per id, class, floor and owner."""

    __slots__ = ("_by_class", "_by_floor", "_by_owner", "_checks", "_pos", "devices", "inventory")

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.devices: Sequence[Device] = inventory.devices
        self._pos: dict[str, int] = {}
        self._by_class: dict[str, list[int]] = {}
        self._by_floor: dict[int | None, list[int]] = {}
        self._by_owner: dict[str | None, list[int]] = {}
        self._checks: dict[str, dict[str, ResolvedCheck]] = {}  # filled on first use per device
        for i, d in enumerate(self.devices):
            self._pos[d.id] = i
            self._by_class.setdefault(d.class_, []).append(i)
            self._by_floor.setdefault(d.location.floor, []).append(i)
            self._by_owner.setdefault(d.owner, []).append(i)

    def __len__(self) -> int:
        return len(self.devices)

    def get(self, device_id: str) -> Device | None:
        i = self._pos.get(device_id)
        return None if i is None else self.devices[i]

    def checks(self, device: Device) -> dict[str, ResolvedCheck]:
        """The device's resolved checks by name (resolved once per device and inventory)."""
        found = self._checks.get(device.id)
        if found is None:
            found = self._checks[device.id] = {
                c.name: c for c in self.inventory.checks_for(device)
            }
        return found

    def positions(
        self,
        *,
        device_class: str | None = None,
        floor: int | None = None,
        owner: str | None = None,
    ) -> Sequence[int] | range:
        """Positions of the devices matching every given attribute, in inventory order.

        Costs the size of the smallest matching bucket, not the inventory."""
        buckets: list[Sequence[int]] = []
        if device_class is not None:
            buckets.append(self._by_class.get(device_class, ()))
        if floor is not None:
            buckets.append(self._by_floor.get(floor, ()))
        if owner is not None:
            buckets.append(self._by_owner.get(owner, ()))
        if not buckets:
            return range(len(self.devices))
        buckets.sort(key=len)
        first, rest = buckets[0], buckets[1:]
        if not rest:
            return first
        devices = self.devices
        return [
            i
            for i in first
            if (device_class is None or devices[i].class_ == device_class)
            and (floor is None or devices[i].location.floor == floor)
            and (owner is None or devices[i].owner == owner)
        ]


__all__ = ["DeviceIndex"]
