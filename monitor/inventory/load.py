"""Load ``inventory.yaml``: every problem at once, each at its ``file:line:col``, no traceback.

Why the YAML node tree: PyYAML's plain ``safe_load`` forgets where values came from, silently keeps
the last of two duplicate keys and turns a bare ``no`` into ``False``. We compose the node tree
(SafeLoader), check it (duplicate keys, YAML 1.1 traps), construct plain data from it, validate the
data with the pydantic models of :mod:`monitor.inventory`, then run the cross-reference rules on the
raw data (so they still run when some part failed validation) and map every problem back to the
node it is about.

The file name in a problem is the path as the caller gave it (like a compiler), so editors and
terminals can jump to it; the CLI passes what the user typed.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from monitor.inventory import (
    BUILTIN_CLASSES,
    DEFAULT_CATEGORIES,
    Defaults,
    Device,
    DeviceClass,
    Inventory,
    SnmpCheck,
    ime,
    schema,
)
from monitor.inventory.models import category_key

log = logging.getLogger("hallmon.inventory")

Loc = tuple[str | int, ...]
Where = Literal["value", "key", "parent"]
_M = typing.TypeVar("_M", bound=BaseModel)

_STR_TAG = "tag:yaml.org,2002:str"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?\}$")

# Keys whose values are secrets (or carry tokens): never echo their input in a message.
_SECRET_KEYS = frozenset(
    {"community", "auth_key", "priv_key", "webhook", "secret", "url", "token", "password", "key"}
)


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One mistake in the file; ``line``/``col`` 1-based, ``path`` like ``devices[4].parent``."""

    file: str
    line: int
    col: int
    path: str
    message: str
    device: str | None = None  # the id of the device ``path`` is in, if any

    def __str__(self) -> str:
        """``FILE:LINE:COL: PATH: MESSAGE``: the stable form (editors, tests, tools)."""
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def describe(self) -> str:
        """For people: the device named by id too (``devices[64] (kiosk-1f-03).address``)."""
        found = _DEVICE_PATH.match(self.path) if self.device else None
        if found is None:
            return str(self)
        named = f"{found.group(0)} ({self.device}){self.path[found.end():]}"
        return f"{self.file}:{self.line}:{self.col}: {named}: {self.message}"


class InventoryError(Exception):
    """The inventory cannot be used; ``problems`` lists every mistake found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------------------------
# Entry points


def load_inventory(
    path: str | Path, *, env: Mapping[str, str] | None = None, display_name: str | None = None,
    lang: str = "en",
) -> Inventory:
    """Read, check and build the inventory at ``path``; raise :class:`InventoryError` if unusable.

    ``env`` resolves ``${ENV}`` secret references (default: the process environment); ``lang``
    ("en", "zh") is the language of the problems.
    """
    name = display_name if display_name is not None else str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InventoryError(
            [Problem(name, 1, 1, "", f"cannot read the file: {exc.strerror}")]
        ) from None
    return parse_inventory(data, name, env=env, base_dir=Path(path).parent, lang=lang)


def parse_inventory(
    data: bytes | str,
    file: str = "inventory.yaml",
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | Path = ".",
    lang: str = "en",
) -> Inventory:
    """Check and build an inventory from file content (see :func:`load_inventory`)."""
    # The node tree of 10k devices is ~1M young objects: the cyclic GC would run dozens of
    # full passes over them while nothing is garbage yet (measured: compose 2.8 s -> 0.8 s).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    checker = _Checker(file, env, Path(base_dir))
    try:
        return _share_parts(checker.run(data))
    except InventoryError as exc:
        raise checker.explain(exc, data, lang) from None
    except RecursionError:
        raise InventoryError([Problem(file, 1, 1, "", "the file is nested too deeply")]) from None
    except Exception as exc:  # the last net under "never a traceback": say what, not where
        raise InventoryError(
            [Problem(file, 1, 1, "", f"internal error while checking (please report): {exc!r}")]
        ) from None
    finally:
        if gc_was_enabled:
            gc.enable()


def _share_parts(inventory: Inventory) -> Inventory:
    """Make the models' equal small parts one object each: every model's set of explicitly
    given field names (pydantic keeps one per instance, ~0.9 kB per device) and short string
    values (class, area, tags). The models are frozen, so nothing mutates what is shared; a
    pickle (the isolated parse) keeps the sharing. 10k devices: ~23 -> ~13 MB (bench/memory.py).
    """
    sets: dict[frozenset[str], set[str]] = {}
    strings: dict[str, str] = {}
    seen: set[int] = set()
    todo: list[BaseModel] = [inventory]
    while todo:
        model = todo.pop()
        if id(model) in seen:
            continue
        seen.add(id(model))
        given = model.__pydantic_fields_set__
        shared = sets.setdefault(frozenset(given), given)
        if shared is not given:
            object.__setattr__(model, "__pydantic_fields_set__", shared)
        values = model.__dict__
        for key, value in values.items():
            if type(value) is str:
                if len(value) <= 64:
                    values[key] = strings.setdefault(value, value)
            elif isinstance(value, BaseModel):
                todo.append(value)
            elif isinstance(value, list | tuple):
                todo.extend(v for v in value if isinstance(v, BaseModel))
            elif isinstance(value, dict):
                todo.extend(v for v in value.values() if isinstance(v, BaseModel))
    return inventory


# Inventories at least this big are parsed in a child process (parse_inventory_isolated): about
# the size where the child's start-up (~0.35 s: Python + pydantic) costs no more than the parse.
ISOLATE_ABOVE_BYTES = 256 * 1024
_CHILD_TIMEOUT_S = 300.0
_CHILD_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from monitor.inventory.load import _child_main; _child_main()"
)


def parse_inventory_isolated(
    data: bytes | str,
    file: str = "inventory.yaml",
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | Path = ".",
) -> Inventory:
    """:func:`parse_inventory` in a short-lived child process; same result, same errors.

    Why: the YAML node tree of 10k devices is ~1M small objects; freed, its surviving
    neighbours keep the arenas fragmented and ~45 MB stays resident in the daemon for good.
    The child builds and validates; the parent only unpickles the finished models (compact, and
    long-lived together). Not multiprocessing: spawn re-imports ``__main__`` and fork is unsafe
    in a threaded process; a plain ``python -c`` child with pickles on its pipes is neither.
    If the child cannot run at all, the parse happens here (slower to give memory back, same
    answer).
    """
    # The child sees the environment and working directory of *now* (not of some earlier fork).
    request = (data, file, dict(os.environ if env is None else env), str(Path(base_dir).absolute()))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD_CODE, str(Path(__file__).resolve().parents[1])],
            input=pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL),
            capture_output=True,
            timeout=_CHILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("inventory child process failed (%s); parsing here", type(exc).__name__)
        return parse_inventory(data, file, env=env, base_dir=base_dir)
    if proc.returncode != 0 or not proc.stdout:
        # stderr is the child's traceback: Python frames, never the env (it came by pipe).
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        log.warning("inventory child process exited %d (%s); parsing here",
                    proc.returncode, tail[0] if tail else "no output")  # fmt: skip
        return parse_inventory(data, file, env=env, base_dir=base_dir)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # ~100k young objects, none of them garbage: no collection passes over them
    try:
        kind, payload = pickle.loads(proc.stdout)  # our own child, on our own pipe
    finally:
        if gc_was_enabled:
            gc.enable()
    if kind == "error":
        raise InventoryError(payload)
    return typing.cast(Inventory, payload)


def _child_main() -> None:
    """The child of :func:`parse_inventory_isolated`: a request pickle in, a result pickle out."""
    data, file, env, base_dir = pickle.loads(sys.stdin.buffer.read())
    result: tuple[str, object]
    try:
        result = ("ok", parse_inventory(data, file, env=env, base_dir=base_dir))
    except InventoryError as exc:  # its pickle would lose .problems: send them as they are
        result = ("error", list(exc.problems))
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


def schema_json() -> str:
    """``inventory.schema.json`` as committed: sorted keys, indent 2, trailing newline."""
    return json.dumps(schema(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------
# Reading text and YAML


def _decode(data: bytes | str, file: str) -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        line_start = before.rfind(b"\n") + 1
        col = len(before[line_start:].decode("utf-8", errors="replace")) + 1
        bad = data[exc.start]
        raise InventoryError(
            [
                Problem(
                    file,
                    line,
                    col,
                    "",
                    f"the file is not UTF-8 (byte 0x{bad:02x}): save it as UTF-8",
                )
            ]
        ) from None


def _line_col(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


class _PositionedValues:
    """Value errors while constructing (e.g. a date like 2026-02-30) carry the node's position."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (yaml.MarkedYAMLError, RecursionError):
            raise
        except Exception as exc:  # PyYAML's constructors: ValueError, IndexError ('!!int ')...
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {exc}", node.start_mark
            ) from None


class _Loader(_PositionedValues, yaml.SafeLoader):
    pass


# libyaml parses ~8x faster (120 devices: 18 ms instead of 140 ms). Errors are always reported
# by the pure-Python parser, so the messages are the same with or without libyaml.
_FastLoader: type[yaml.SafeLoader] = _Loader
if getattr(yaml, "__with_libyaml__", False):

    class _CLoader(_PositionedValues, yaml.CSafeLoader):
        pass

    _FastLoader = _CLoader  # type: ignore[assignment]


def _compose(text: str, file: str) -> tuple[yaml.SafeLoader, Node | None]:
    try:
        fast = _FastLoader(text)
        return fast, fast.get_single_node()
    except yaml.YAMLError:
        pass  # parse again below, for the error message as the pure-Python parser words it
    try:
        loader = _Loader(text)  # the reader checks for unprintable characters right here
    except yaml.reader.ReaderError as exc:
        raise InventoryError([_reader_problem(exc, file, text)]) from None
    try:
        return loader, loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        loader.dispose()
        raise InventoryError([_reader_problem(exc, file, text)]) from None
    except yaml.MarkedYAMLError as exc:
        loader.dispose()
        raise InventoryError([_yaml_problem(exc, file, text)]) from None


def _reader_problem(exc: yaml.reader.ReaderError, file: str, text: str) -> Problem:
    line, col = _line_col(text, exc.position)
    char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
    code = f" (U+{ord(char):04X})" if len(char) == 1 else ""
    return Problem(file, line, col, "", f"character {char!r}{code} is not allowed in YAML")


def _yaml_problem(exc: yaml.MarkedYAMLError, file: str, text: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    parts = [p for p in (exc.context, exc.problem) if p]
    message = "YAML syntax error: " + ", ".join(parts) if parts else "YAML syntax error"
    if mark and 0 <= mark.index < len(text) and text[mark.index] == "\t":
        message += " (a tab: indent with spaces, never tabs)"
    return Problem(file, line, col, "", message)


# --------------------------------------------------------------------------------------------
# The node tree: positions, duplicate keys, YAML 1.1 traps


_KEY_WORDS = {"yes", "no", "on", "off"}
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")
_YAML12_NUMBER = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^0o[0-7]+$")


def _normalize_keys(mapping: MappingNode) -> None:
    """A bare ``on:`` or ``no:`` *key* is the text, as in YAML 1.2 (keys here are always text)."""
    for key, _ in mapping.value:
        if (
            isinstance(key, ScalarNode)
            and not key.style  # plain: None (PyYAML) or "" (libyaml)
            and key.tag == _BOOL_TAG
            and key.value.lower() in _KEY_WORDS
        ):
            key.tag = _STR_TAG


def _trap(node: ScalarNode) -> str | None:
    """The hint for a bare scalar that YAML 1.1 and YAML 1.2 (editors, schema) read differently."""
    if node.style:  # quoted or block: not plain
        return None
    text = node.value
    if node.tag == _BOOL_TAG and text.lower() in _KEY_WORDS:
        value = "true" if text.lower() in ("yes", "on") else "false"
        return (
            f"bare '{text}' is read as the boolean {value} (YAML 1.1): quote it (\"{text}\") "
            f"if you mean the text, or write {value}"
        )
    if node.tag == _INT_TAG and _LEADING_ZERO.match(text):
        return (
            f"bare '{text}' is read as an octal number (YAML 1.1): quote it (\"{text}\") "
            "if you mean the text, or drop the leading zero"
        )
    if node.tag in (_INT_TAG, _FLOAT_TAG) and ":" in text:
        return f"bare '{text}' is read as a base-60 number (YAML 1.1): quote it (\"{text}\")"
    if node.tag == _INT_TAG and "_" in text:
        return (
            f"bare '{text}' is a number to YAML 1.1 but text to YAML 1.2: write it without '_' "
            f'or quote it ("{text}")'
        )
    if node.tag == _STR_TAG and _YAML12_NUMBER.match(text):
        return (
            f"bare '{text}' is text to YAML 1.1 but a number to YAML 1.2 (editors): "
            f"quote it (\"{text}\") if you mean the text, or write the number with a '.' "
            "and a signed exponent (1.0e+3)"
        )
    return None


# --------------------------------------------------------------------------------------------
# Paths


_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_DEVICE_PATH = re.compile(r"^devices\[(\d+)\]")


def format_path(loc: Loc) -> str:
    """``("devices", 4, "parent")`` -> ``devices[4].parent``; odd keys as ``["a b"]``."""
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif _SIMPLE_KEY.match(item):
            out += f".{item}" if out else item
        else:
            out += '["' + item.replace('"', '\\"') + '"]'
    return out


def _suggest(word: str, known: Iterable[str], what: str) -> str:
    names = sorted(set(known))
    close = difflib.get_close_matches(word, names, n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if what and names and len(names) <= 20:
        return f" (known {what}: {', '.join(names)})"
    return ""


# --------------------------------------------------------------------------------------------
# Model lookup (for "unknown key, did you mean")


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` (best effort)."""
    tp: Any = Inventory
    for item in loc:
        members = _union_members(_unwrap(tp))
        if len(members) > 1:
            picked = [m for m in members if isinstance(m, type) and _tag_of(m) == item]
            if picked:
                tp = picked[0]
                continue
        tp = members[0]
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(item, str):
            fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
            if item not in fields:
                return None
            tp = fields[item].annotation
        elif origin is list and isinstance(item, int):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    members = _union_members(_unwrap(tp))
    model = members[0] if len(members) == 1 else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _tag_of(model: type[BaseModel]) -> str | None:
    kind = model.model_fields.get("kind") or model.model_fields.get("type")
    if kind is None:
        return None
    args = typing.get_args(kind.annotation)
    return str(args[0]) if len(args) == 1 else None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


# --------------------------------------------------------------------------------------------
# Describing values in messages


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text '{value}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "datetime_type": "a date and time (2026-05-01T08:30:00+08:00)",
    "datetime_parsing": "a date and time (2026-05-01T08:30:00+08:00)",
    "datetime_from_date_parsing": "a date and time (2026-05-01T08:30:00+08:00)",
}

_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def _message(err: Mapping[str, Any], secret: bool) -> str:
    kind: str = err["type"]
    value = err.get("input")
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    got = "" if secret else f", got {_describe(value)}"
    if kind == "missing":
        return f"missing required key '{err['loc'][-1]}'"
    if kind == "invalid_key":
        return "keys must be text"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}{got}"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return f"must be {op} {ctx.get(key)}{got}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}{got}"
    if kind == "union_tag_invalid":
        return (f"unknown {ctx.get('discriminator', 'kind')} {ctx.get('tag')!r} (expected "
                f"{ctx.get('expected_tags')})")
    if kind == "union_tag_not_found":
        return f"missing required key {ctx.get('discriminator')}"
    msg: str = err["msg"]
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return msg[:1].lower() + msg[1:] if msg[1:2].islower() else msg  # keep 'SNMP', 'UPS'...


# --------------------------------------------------------------------------------------------
# The checker


@dataclass
class _Checker:
    file: str
    env: Mapping[str, str] | None
    base_dir: Path
    problems: list[Problem] = field(default_factory=list)
    trap_positions: set[tuple[int, int]] = field(default_factory=set)
    root: Node | None = None
    _keys: dict[int, Any] = field(default_factory=dict)
    _text: str = ""
    device_ids: dict[int, str] = field(default_factory=dict)  # devices[i] -> its id

    # ---- adding problems ----

    def at_node(self, node: Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, path, message))

    def add(self, loc: Loc, message: str, where: Where = "value") -> None:
        node, path = self.locate(loc, where)
        self.at_node(node, format_path(path), message)

    # ---- locating a loc in the node tree ----

    def key_value(self, node: Node) -> Any:
        if node.tag == _STR_TAG and isinstance(node, ScalarNode):
            return node.value  # nearly every key: no need to construct
        if id(node) not in self._keys:
            try:
                self._keys[id(node)] = yaml.constructor.SafeConstructor().construct_object(node)
            except Exception:  # unconstructable key: compare by raw text
                self._keys[id(node)] = getattr(node, "value", None)
        return self._keys[id(node)]

    def _release_tree(self, text: str) -> None:
        self.root = None
        self._keys.clear()  # keyed by id(node): stale once the nodes are gone
        self._text = text

    def _tree(self) -> Node:
        """The node tree, composed again (keys normalized as check_nodes does) if released."""
        if self.root is None:
            loader, root = _compose(self._text, self.file)
            loader.dispose()
            assert root is not None  # it was composed from this text once already
            for node, _ in self.walk_paths(root):
                if isinstance(node, MappingNode):
                    _normalize_keys(node)
            self.root = root
        return self.root

    def locate(self, loc: Loc, where: Where = "value") -> tuple[Node, Loc]:
        """The node ``loc`` names; items that are not in the data (union tags...) are skipped.

        ``where="key"`` points at the last key itself; ``"parent"`` at the enclosing mapping.
        """
        if loc and loc[-1] == "[key]":  # pydantic's marker for "the key itself is wrong"
            loc, where = loc[:-1], "key"
        node: Node = self._tree()
        path: list[str | int] = []
        for i, item in enumerate(loc):
            child, key = self._child(node, item)
            if child is None:
                continue
            step: str | int = str(item) if key is not None else item
            if i == len(loc) - 1:
                if where == "parent":
                    return node, tuple(path)
                if where == "key" and key is not None:
                    return key, (*path, step)
            node = child
            path.append(step)
        return node, tuple(path)

    def _child(self, node: Node, item: str | int) -> tuple[Node | None, Node | None]:
        if isinstance(node, MappingNode):
            for k, v in reversed(node.value):  # the last of duplicate keys wins, as in the data
                kv = self.key_value(k)
                if kv == item and type(kv) is type(item):
                    return v, k
        elif isinstance(node, SequenceNode) and isinstance(item, int):
            if 0 <= item < len(node.value):
                return node.value[item], None
        return None, None

    # ---- the final word ----

    def explain(self, exc: InventoryError, data: bytes | str, lang: str) -> InventoryError:
        """The problems as staff should read them. Slips of a Chinese input method (``：``,
        ``，``, full-width spaces) make YAML fail elsewhere, often on another line: when any
        is found, they alone are the problems, on their own lines. Otherwise each problem
        knows its device's id (``Problem.describe``) and messages are in ``lang``."""
        text = data if isinstance(data, str) else data.decode("utf-8-sig", errors="replace")
        slips = [Problem(self.file, line, col, "", ime.hint(char, lang))
                 for line, col, char in ime.scan(text)]
        if slips:
            return InventoryError(slips)
        return InventoryError([
            dataclasses.replace(p, device=self.device_of(p.path),
                                message=ime.translate(p.message, lang))
            for p in exc.problems])

    def device_of(self, path: str) -> str | None:
        found = _DEVICE_PATH.match(path)
        if found is None or path == f"{found.group(0)}.id":  # the id is the problem itself
            return None
        return self.device_ids.get(int(found.group(1)))

    # ---- the passes ----

    def run(self, data: bytes | str) -> Inventory:
        text = _decode(data, self.file)
        if not text.strip() or all(
            not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
        ):
            raise InventoryError(
                [Problem(self.file, 1, 1, "", "the file is empty: it needs at least 'site:'")]
            )
        loader, root = _compose(text, self.file)
        try:
            if root is None:
                raise InventoryError(
                    [Problem(self.file, 1, 1, "", "the file is empty: it needs at least 'site:'")]
                )
            self.root = root
            if not isinstance(root, MappingNode):
                self.at_node(root, "", "expected a mapping at the top (site:, devices: ...)")
                raise InventoryError(self.problems)
            self.check_nodes(root)
            try:
                raw = loader.construct_document(root)
            except yaml.MarkedYAMLError as exc:
                raise InventoryError(
                    [*self.problems, _yaml_problem(exc, self.file, text)]
                ) from None
        finally:
            loader.dispose()
        self.device_ids = {i: d["id"] for i, d in enumerate(_list(_dict(raw).get("devices")))
                           if isinstance(d, dict) and isinstance(d.get("id"), str)}
        # The node tree is ~70% of the load's peak memory (10k devices: ~55 MB of ~80) and is
        # only needed again to place a problem: drop it now and compose it again on demand.
        del loader, root
        self._release_tree(text)
        inventory = self.validate(raw)
        _CrossRefs(self, raw, inventory).run()
        if self.problems or inventory is None:
            raise InventoryError(self.problems)
        return inventory

    def check_nodes(self, root: Node) -> None:
        """Duplicate keys and YAML 1.1 traps, each reported with its path."""
        for node, path in self.walk_paths(root):
            if isinstance(node, MappingNode):
                _normalize_keys(node)  # before walk_paths reads these keys (it resumes after)
                seen: dict[Any, Node] = {}
                for key, _ in node.value:
                    if key.tag == _MERGE_TAG or not isinstance(key, ScalarNode):
                        continue
                    kv = (key.tag, key.value)
                    if kv in seen:
                        first = seen[kv].start_mark.line + 1
                        self.at_node(
                            key,
                            format_path((*path, str(self.key_value(key)))),
                            f"duplicate key '{key.value}' (first at line {first}): "
                            "YAML would silently keep only the last",
                        )
                    seen[kv] = key
            elif isinstance(node, ScalarNode):
                hint = _trap(node)
                if hint is not None:
                    mark = node.start_mark
                    self.trap_positions.add((mark.line + 1, mark.column + 1))
                    self.at_node(node, format_path(path), hint)

    def walk_paths(self, root: Node) -> Iterator[tuple[Node, Loc]]:
        """Every node once, with the path it is first reached by (keys count as their mapping)."""
        seen: set[int] = set()
        stack: list[tuple[Node, Loc]] = [(root, ())]
        while stack:
            node, path = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            yield node, path
            if isinstance(node, MappingNode):
                for k, v in reversed(node.value):
                    kv = self.key_value(k)
                    stack.append((v, (*path, str(kv))))
                    stack.append((k, path))
            elif isinstance(node, SequenceNode):
                for i in reversed(range(len(node.value))):
                    stack.append((node.value[i], (*path, i)))

    def validate(self, raw: Any) -> Inventory | None:
        context: dict[str, Any] = {"base_dir": self.base_dir}
        if self.env is not None:
            context["env"] = self.env
        self.resolve_channel_secrets(raw)
        try:
            return Inventory.model_validate(raw, context=context)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                self.add_pydantic(err)
            return None

    def resolve_channel_secrets(self, raw: Any) -> None:
        """Notification channels get their secrets resolved here, before validation.

        ``webhook``/``secret``/``password`` (and a webhook channel's ``url``) are references,
        ``${ENV}`` / ``${ENV:-default}``, or come from a ``<key>_file`` sibling. The raw data is
        ours (freshly constructed), so it is rewritten in place.
        """
        channels = _dict(_dict(raw).get("notifications")).get("channels")
        for name, body in _dict(channels).items():
            if not isinstance(body, dict):
                continue
            secret_keys = {"webhook", "secret", "password"}
            if body.get("type") == "webhook":
                secret_keys.add("url")
            loc: Loc = ("notifications", "channels", name)
            for key in sorted(secret_keys):
                self.resolve_one(body, key, loc)
            if "url" not in secret_keys and isinstance(body.get("url"), str):
                if _ENV_REF.match(body["url"].strip()):  # a reference is fine anywhere
                    self.resolve_one(body, "url", loc)

    def resolve_one(self, body: dict[Any, Any], key: str, loc: Loc) -> None:
        env = os.environ if self.env is None else self.env
        file_key = f"{key}_file"
        if file_key in body:
            path = body.pop(file_key)
            if key in body:
                self.add((*loc, key), f"give '{key}' or '{file_key}', not both", where="key")
                return
            try:
                body[key] = (self.base_dir / str(path)).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                self.add((*loc, file_key), f"cannot read secret file: {exc.strerror}")
                body[key] = ""
            return
        value = body.get(key)
        if value is None:
            return
        match = _ENV_REF.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            self.add(
                (*loc, key),
                f"secrets are written as a reference, '${{ENV_VAR}}' (or '${{ENV_VAR:-default}}'), "
                f"or with '{file_key}'; never as the literal value",
            )
            body[key] = ""  # reported; a placeholder keeps pydantic from reporting it again
            return
        name, default = match.group(1), match.group(2)
        if name in env:
            body[key] = env[name]
        elif default is not None:
            body[key] = default
        else:
            self.add((*loc, key), f"environment variable {name} is not set")
            body[key] = ""

    def add_pydantic(self, err: Mapping[str, Any]) -> None:
        loc: Loc = tuple(err["loc"])
        kind = err["type"]
        where: Where = (
            "parent" if kind == "missing" else "key" if kind == "extra_forbidden" else "value"
        )
        node, path = self.locate(loc, where)
        mark = node.start_mark
        if (mark.line + 1, mark.column + 1) in self.trap_positions:
            return  # the YAML 1.1 hint at this spot says it better
        names = [x for x in loc if isinstance(x, str)]
        secret = bool(names) and names[-1] in _SECRET_KEYS
        if kind == "extra_forbidden":
            key = str(loc[-1])
            model = _model_at(loc[:-1])  # pydantic's loc names union members by tag
            hint = _suggest(key, _field_names(model), "keys") if model else ""
            message = f"unknown key '{key}'{hint}"
            path = path[:-1]
        elif loc[-1] == "[key]":
            message = f"a key must be text, got {_describe(err.get('input'))}: quote it"
        else:
            message = _message(err, secret)
        self.at_node(node, format_path(path), message)


# --------------------------------------------------------------------------------------------
# Cross references (on raw data: they run even when some part failed validation)


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strs(value: Any) -> list[tuple[int, str]]:
    return [(i, v) for i, v in enumerate(_list(value)) if isinstance(v, str)]


def _partial(model: type[_M], data: Any, context: dict[str, Any] | None = None) -> _M | None:
    """The model if this part validates on its own, else None (its problems are reported)."""
    try:
        return model.model_validate(data, context=context)
    except (ValidationError, ValueError, TypeError):
        return None


class _CrossRefs:
    def __init__(self, checker: _Checker, raw: dict[Any, Any], inventory: Inventory | None):
        self.c = checker
        self.raw = raw
        self.inventory = inventory
        self.devices = [
            (i, d) for i, d in enumerate(_list(raw.get("devices"))) if isinstance(d, dict)
        ]
        self.ids = {d["id"]: i for i, d in reversed(self.devices) if isinstance(d.get("id"), str)}
        self.classes = self._classes()
        self.credentials = {k for k in _dict(raw.get("credentials")) if isinstance(k, str)}

    def _classes(self) -> dict[str, DeviceClass | None]:
        """Built-in classes, overridden by the file's (None where the file's class is invalid)."""
        out: dict[str, DeviceClass | None] = dict(BUILTIN_CLASSES)
        for name, body in _dict(self.raw.get("classes")).items():
            if isinstance(name, str):
                out[name] = _partial(DeviceClass, body)
        return out

    def class_of(self, device: dict[Any, Any]) -> DeviceClass | None:
        name = device.get("class")
        return self.classes.get(name) if isinstance(name, str) else None

    def run(self) -> None:
        self.device_ids()
        self.addresses()
        self.references()
        self.cycles()
        self.maintenance()
        self.simulation()
        self.notifications()
        self.reports()
        self.tickets()
        self.timeouts()

    def device_ids(self) -> None:
        first: dict[str, int] = {}
        for i, d in self.devices:
            did = d.get("id")
            if not isinstance(did, str):
                continue
            if did in first:
                self.c.add(
                    ("devices", i, "id"),
                    f"duplicate device id '{did}' (first at devices[{first[did]}])",
                )
            else:
                first[did] = i

    def addresses(self) -> None:
        import ipaddress

        first: dict[str, int] = {}
        for i, d in self.devices:
            addr = d.get("address")
            if not isinstance(addr, str):
                continue
            try:
                norm = str(ipaddress.ip_address(addr))
            except ValueError:
                norm = addr.lower().rstrip(".")
            if norm in first:
                j = first[norm]
                other = self.devices_by_index(j).get("id")
                self.c.add(
                    ("devices", i, "address"),
                    f"duplicate address '{addr}' (also devices[{j}] '{other}')",
                )
            else:
                first[norm] = i

    def devices_by_index(self, index: int) -> dict[Any, Any]:
        return next(d for i, d in self.devices if i == index)

    def references(self) -> None:
        for i, d in self.devices:
            cls, cred, parent = d.get("class"), d.get("credential"), d.get("parent")
            if isinstance(cls, str) and cls not in self.classes:
                self.c.add(
                    ("devices", i, "class"),
                    f"unknown class '{cls}'" + _suggest(cls, self.classes.keys(), "classes"),
                )
            if isinstance(cred, str) and cred not in self.credentials:
                self.c.add(
                    ("devices", i, "credential"),
                    f"unknown credential '{cred}'"
                    + _suggest(cred, self.credentials, "credentials"),
                )
            if isinstance(parent, str) and parent not in self.ids:
                self.c.add(
                    ("devices", i, "parent"),
                    f"unknown device '{parent}'" + _suggest(parent, self.ids.keys(), ""),
                )
            self.device_checks(i, d)

    def device_checks(self, i: int, d: dict[Any, Any]) -> None:
        """Check overrides name real checks; a class polled by SNMP needs a credential."""
        cls = self.class_of(d)
        if cls is None:
            return
        extra = [e for e in _list(d.get("extra_checks")) if isinstance(e, dict)]
        names = [c.name for c in cls.checks] + [
            e["name"] for e in extra if isinstance(e.get("name"), str)
        ]
        overrides = _dict(d.get("checks"))
        for name in overrides:
            if isinstance(name, str) and name not in names:
                self.c.add(
                    ("devices", i, "checks", name),
                    f"unknown check '{name}' for class '{d['class']}'"
                    + _suggest(name, names, "checks"),
                    where="key",
                )
        disabled = {n for n, o in overrides.items() if _dict(o).get("enabled") is False}
        snmp = [c.name for c in cls.checks if c.kind == "snmp" and c.enabled] + [
            e.get("name") for e in extra if e.get("kind") == "snmp" and e.get("enabled", True)
        ]
        snmp = [n for n in snmp if n not in disabled]
        if snmp and d.get("credential") is None:
            self.c.add(
                ("devices", i),
                f"class '{d['class']}' polls by SNMP (check '{snmp[0]}'): "
                "set 'credential'" + _suggest("", self.credentials, "credentials"),
            )

    def cycles(self) -> None:
        parent = {
            d["id"]: d["parent"]
            for _, d in self.devices
            if isinstance(d.get("id"), str) and isinstance(d.get("parent"), str)
        }
        done: set[str] = set()
        for _, d in self.devices:
            start = d.get("id")
            if not isinstance(start, str) or start in done:
                continue
            chain: list[str] = []
            node: str | None = start
            while node is not None and node not in done and node not in chain:
                chain.append(node)
                node = parent.get(node)
            done.update(chain)
            if node is not None and node in chain:
                cycle = chain[chain.index(node) :]
                first = min(cycle, key=lambda x: self.ids.get(x, 0))
                k = cycle.index(first)
                ordered = cycle[k:] + cycle[:k]
                self.c.add(
                    ("devices", self.ids[first], "parent"),
                    "parent cycle: " + " -> ".join([*ordered, first]),
                )

    def selectors(self, loc: Loc, body: dict[Any, Any]) -> None:
        for j, did in _strs(body.get("devices")):
            if did not in self.ids:
                self.c.add(
                    (*loc, "devices", j),
                    f"unknown device '{did}'" + _suggest(did, self.ids.keys(), ""),
                )
        for j, cls in _strs(body.get("classes")):
            if cls not in self.classes:
                self.c.add(
                    (*loc, "classes", j),
                    f"unknown class '{cls}'" + _suggest(cls, self.classes.keys(), "classes"),
                )

    def maintenance(self) -> None:
        for i, w in enumerate(_list(self.raw.get("maintenance"))):
            self.selectors(("maintenance", i), _dict(w))

    def simulation(self) -> None:
        for i, f in enumerate(_list(_dict(self.raw.get("simulation")).get("faults"))):
            f = _dict(f)
            did, check = f.get("device"), f.get("check")
            if isinstance(did, str) and did not in self.ids:
                self.c.add(
                    ("simulation", "faults", i, "device"),
                    f"unknown device '{did}'" + _suggest(did, self.ids.keys(), ""),
                )
            elif isinstance(did, str) and isinstance(check, str):
                d = self.devices_by_index(self.ids[did])
                cls = self.class_of(d)
                extra = [e.get("name") for e in _list(d.get("extra_checks")) if isinstance(e, dict)]
                names = [c.name for c in cls.checks] + extra if cls else None
                if names is not None and check not in names:
                    self.c.add(
                        ("simulation", "faults", i, "check"),
                        f"unknown check '{check}' for device '{did}'"
                        + _suggest(check, [n for n in names if isinstance(n, str)], "checks"),
                    )
                elif cls is not None:
                    self.fault_values(i, f, cls, check)

    def fault_values(self, i: int, fault: dict[Any, Any], cls: DeviceClass, check: str) -> None:
        """Scripted values must be values the (class) SNMP check produces, or the demo lies."""
        spec = next((c for c in cls.checks if c.name == check), None)
        if not isinstance(spec, SnmpCheck):
            return
        produced = {*spec.oids, *spec.walks, *spec.ratios}
        for name in _dict(fault.get("values")):
            if isinstance(name, str) and name not in produced:
                self.c.add(
                    ("simulation", "faults", i, "values", name),
                    f"check '{check}' produces no value '{name}'"
                    + _suggest(name, produced, "values"),
                    where="key",
                )

    def notifications(self) -> None:
        notes = _dict(self.raw.get("notifications"))
        channels = {k for k in _dict(notes.get("channels")) if isinstance(k, str)}
        for i, route in enumerate(_list(notes.get("routes"))):
            route = _dict(route)
            for j, ch in _strs(route.get("channels")):
                if ch not in channels:
                    self.c.add(
                        ("notifications", "routes", i, "channels", j),
                        f"unknown channel '{ch}'" + _suggest(ch, channels, "channels"),
                    )
            self.selectors(("notifications", "routes", i, "match"), _dict(route.get("match")))

    def reports(self) -> None:
        notes = _dict(self.raw.get("notifications"))
        names = (_dict(r).get("name") for r in _list(notes.get("routes")))
        routes = {n for n in names if isinstance(n, str)}
        for i, sched in enumerate(_list(self.raw.get("reports"))):
            route = _dict(sched).get("route")
            if isinstance(route, str) and route not in routes:
                self.c.add(("reports", i, "route"),
                           f"unknown route '{route}'" + _suggest(route, routes, "routes"))

    def tickets(self) -> None:
        policy = _dict(self.raw.get("tickets"))
        cats = policy.get("categories", list(DEFAULT_CATEGORIES))
        categories = {c for c in _list(cats) if isinstance(c, str)}
        for i, rule in enumerate(_list(policy.get("auto"))):
            rule = _dict(rule)
            cat = rule.get("category")
            if isinstance(cat, str) and category_key(cat) not in categories:
                self.c.add(
                    ("tickets", "auto", i, "category"),
                    f"unknown ticket category '{cat}'" + _suggest(cat, categories, "categories"),
                )
            self.selectors(("tickets", "auto", i), rule)

    def timeouts(self) -> None:
        """timeout >= interval after class profile, device override and defaults are applied."""
        if self.inventory is not None:
            defaults: Defaults | None = self.inventory.defaults
        else:
            defaults = _partial(Defaults, self.raw.get("defaults", {}))
        if defaults is None:
            return  # the defaults themselves are wrong; that is reported already
        valid = self.inventory.devices if self.inventory is not None else None
        for i, d in self.devices:
            # all valid: the models line up with the raw list; else validate device by device
            device = valid[i] if valid is not None else _partial(Device, d, self._ctx())
            cls = self.classes.get(device.class_) if device is not None else None
            if device is None or cls is None:
                continue
            for j, spec in enumerate([*cls.checks, *device.extra_checks]):
                o = device.checks.get(spec.name)
                interval = (o and o.interval) or spec.interval or defaults.interval
                timeout = (o and o.timeout) or spec.timeout or defaults.timeout
                if timeout < interval:
                    continue
                if o is not None and (o.interval or o.timeout):
                    loc: Loc = ("devices", i, "checks", spec.name)
                elif j >= len(cls.checks):
                    loc = ("devices", i, "extra_checks", j - len(cls.checks))
                elif device.class_ in _dict(self.raw.get("classes")):
                    loc = ("classes", device.class_, "checks", j)
                else:
                    loc = ("defaults",)
                self.c.add(
                    loc,
                    f"check '{spec.name}' of {device.class_} devices: timeout "
                    f"{_secs(timeout)} must be shorter than interval {_secs(interval)}",
                )

    def _ctx(self) -> dict[str, Any]:
        ctx: dict[str, Any] = {"base_dir": self.c.base_dir}
        if self.c.env is not None:
            ctx["env"] = self.c.env
        return ctx


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"


__all__ = [
    "InventoryError",
    "Problem",
    "format_path",
    "load_inventory",
    "parse_inventory",
    "schema_json",
]
