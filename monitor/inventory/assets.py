"""The hall's asset spreadsheet (CSV or XLSX) as inventory entries (``hallmon inventory import``).

The first row names the columns, in English or in Chinese (``HEADERS``); the class may be an id
(``camera``) or its label (``摄像机``). CSV files are read as UTF-8 (with or without BOM) or, if
that fails, GB18030 (what Excel on Chinese Windows writes); the encoding used is reported.
Every bad row is reported as ``FILE:ROW: column: problem`` and nothing is proposed from a file
with problems.
"""

from __future__ import annotations

import csv
import difflib
import io
import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.inventory.models import Inventory

# column -> the names a header may carry (compared without case and surrounding spaces)
HEADERS: Mapping[str, tuple[str, ...]] = {
    "id": ("id", "编号", "设备编号", "资产编号"),
    "name": ("name", "名称", "设备名称"),
    "class": ("class", "类型", "设备类型", "类别"),
    "address": ("address", "ip", "ip地址", "地址", "管理地址"),
    "floor": ("floor", "楼层"),
    "area": ("area", "区域", "位置"),
    "window": ("window", "窗口", "窗口号"),
    "owner": ("owner", "责任部门", "归属部门", "使用部门"),
    "parent": ("parent", "上级设备", "上联设备", "上联交换机"),
    "credential": ("credential", "凭据", "snmp凭据"),
}
_ALIASES = {alias.lower(): column for column, names in HEADERS.items() for alias in names}


@dataclass(frozen=True)
class AssetProblem:
    file: str
    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.column}: {self.message}"


class AssetError(ValueError):
    def __init__(self, problems: list[AssetProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


def read_rows(path: Path) -> tuple[list[list[str]], str]:
    """All rows as text, and how the file was read ("xlsx", "utf-8", "gb18030")."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        import openpyxl

        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        sheet = book.worksheets[0]
        rows = [["" if v is None else str(v).strip() for v in row]
                for row in sheet.iter_rows(values_only=True)]
        book.close()
        return rows, "xlsx"
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        used = "utf-8" if encoding == "utf-8-sig" else encoding
        return [[c.strip() for c in row] for row in csv.reader(io.StringIO(text))], used
    raise AssetError([AssetProblem(path.name, 1, "-", "neither UTF-8 nor GB18030 text")])


def _columns(header: list[str], file: str) -> dict[int, str]:
    out: dict[int, str] = {}
    problems = []
    for i, name in enumerate(header):
        column = _ALIASES.get(name.strip().lower())
        if column is not None:
            out[i] = column
        elif name.strip():
            problems.append(AssetProblem(file, 1, name, "unknown column (known: "
                                         + ", ".join("/".join(v[:2]) for v in HEADERS.values())
                                         + ")"))
    for needed in ("name", "class", "address"):
        if needed not in out.values():
            problems.append(AssetProblem(file, 1, needed, "column missing"))
    if problems:
        raise AssetError(problems)
    return out


def snmp_checks(inventory: Inventory, cls: str) -> list[str]:
    """The checks of class ``cls`` that poll SNMP (they need a credential)."""
    return [c.name for c in inventory.device_classes()[cls].checks if c.kind == "snmp"]


def entries(path: Path, inventory: Inventory,
            credential: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Inventory entries for the rows whose address the inventory does not have yet.

    A device of a class polled by SNMP gets its row's credential, else ``credential``; with
    neither, its SNMP checks are switched off in the entry (the person adds one later).
    """
    rows, used = read_rows(path)
    if not rows:
        raise AssetError([AssetProblem(path.name, 1, "-", "empty file")])
    columns = _columns(rows[0], path.name)
    classes = inventory.device_classes()
    by_label = {c.label: name for name, c in classes.items() if getattr(c, "label", None)}
    have_ids = {d.id for d in inventory.devices}
    have_addresses = {d.address for d in inventory.devices}
    out: list[dict[str, Any]] = []
    problems: list[AssetProblem] = []
    for n, row in enumerate(rows[1:], start=2):
        cell = {col: row[i] for i, col in columns.items() if i < len(row) and row[i]}
        if not cell:
            continue
        found = [AssetProblem(path.name, n, *p)
                 for p in _row_problems(cell, classes, by_label, have_ids)]
        problems += found
        if found or cell.get("address") in have_addresses:
            continue
        entry = _entry(cell, by_label)
        if cell.get("credential") and cell["credential"] not in inventory.credentials:
            problems.append(AssetProblem(path.name, n, "credential",
                                         f"unknown credential {cell['credential']!r}"))
        off = snmp_checks(inventory, entry["class"]) if entry["class"] in classes else []
        if off and not entry.get("credential"):
            if credential:
                entry["credential"] = credential
            else:
                entry["checks"] = {name: {"enabled": False} for name in off}
        out.append(entry)
        have_ids.add(entry["id"])
    if problems:
        raise AssetError(problems)
    return out, used


def _row_problems(cell: dict[str, str], classes: Mapping[str, Any], by_label: dict[str, str],
                  ids: set[str]) -> Iterator[tuple[str, str]]:
    cls = cell.get("class", "")
    if cls not in classes and cls not in by_label:
        close = difflib.get_close_matches(cls, [*classes, *by_label], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        yield "class", f"{cls!r} is not a class{hint}"
    try:
        ipaddress.ip_address(cell.get("address", ""))
    except ValueError:
        yield "address", f"{cell.get('address', '')!r} is not an IP address"
    if "floor" in cell and not cell["floor"].lstrip("-").isdigit():
        yield "floor", f"{cell['floor']!r} is not a floor number"
    if cell.get("id") in ids:
        yield "id", f"{cell['id']!r} is already in the inventory"


def _entry(cell: dict[str, str], by_label: dict[str, str]) -> dict[str, Any]:
    cls = by_label.get(cell["class"], cell["class"])
    entry: dict[str, Any] = {
        "id": cell.get("id") or f"{cls.replace('_', '-')}-{cell['address'].replace('.', '-')}",
        "name": cell["name"], "class": cls, "address": cell["address"]}
    location: dict[str, Any] = {}
    if "floor" in cell:
        location["floor"] = int(cell["floor"])
    if "area" in cell:
        location["area"] = cell["area"]
    if "window" in cell:
        location["window"] = int(cell["window"]) if cell["window"].isdigit() else cell["window"]
    if location:
        entry["location"] = location
    for key in ("owner", "parent", "credential"):
        if key in cell:
            entry[key] = cell[key]
    return entry
