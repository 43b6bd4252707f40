"""Edit inventory.yaml the way a person would: add devices and change keys, keep the rest.

Comments, key order, quoting and the one-line ``- {id: ..., ...}`` style the hall uses stay as
they are (ruamel.yaml round-trip); each addition or change carries a comment saying why. The
result is offered as a unified diff first; :func:`write_checked` writes it only when the new
text passes the same loader as ``hallmon check``.
"""

from __future__ import annotations

import difflib
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from monitor.inventory.load import load_inventory


@dataclass(frozen=True)
class Addition:
    entry: Mapping[str, Any]  # id, name, class, address, ... in the order to write them
    why: str


@dataclass(frozen=True)
class Change:
    device_id: str
    key: str
    value: Any
    why: str


def _yaml() -> YAML:
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold the hall's long one-line device entries
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def apply(text: str, additions: Sequence[Addition], changes: Sequence[Change] = ()) -> str:
    """The inventory text with ``additions`` appended to ``devices:`` and ``changes`` made."""
    if not additions and not changes:  # not even an empty "devices: []" added
        return text
    yaml = _yaml()
    data = yaml.load(text) if text.strip() else CommentedMap()
    devices = data.get("devices")
    if devices is None:
        devices = data["devices"] = CommentedSeq()
    # New entries follow the file's style: one-line flow mappings if its first device is one.
    flow = bool(devices) and bool(getattr(getattr(devices[0], "fa", None), "_flow_style", False))
    index = {d.get("id"): d for d in devices if isinstance(d, Mapping)}
    for change in changes:
        target = index.get(change.device_id)
        if isinstance(target, CommentedMap):
            target[change.key] = change.value
    for add in additions:
        entry = CommentedMap(add.entry)
        if flow:
            entry.fa.set_flow_style()
        devices.append(entry)
        devices.yaml_set_comment_before_after_key(len(devices) - 1, before=add.why, indent=2)
    out = io.StringIO()
    yaml.dump(data, out)
    return _keep_layout(text, out.getvalue())


def _keep_layout(old: str, new: str) -> str:
    """Undo the dumper's re-flowing: a block of lines that differs only in whitespace (a long
    flow mapping the person wrapped by hand) keeps the person's lines."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        same = "".join("".join(a[i1:i2]).split()) == "".join("".join(b[j1:j2]).split())
        out += a[i1:i2] if op == "equal" or (op == "replace" and same) else b[j1:j2]
    return "".join(out)


def diff(old: str, new: str, path: str) -> str:
    return "".join(difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"a/{path}", tofile=f"b/{path}"))


def write_checked(path: Path, new: str, env: Mapping[str, str] | None = None) -> None:
    """Write ``new`` to ``path`` atomically if it loads cleanly; else raise InventoryError."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
        load_inventory(tmp, env=env, display_name=str(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
