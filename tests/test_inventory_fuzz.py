"""Property tests: whatever the bytes, the loader answers with an Inventory or InventoryError.

Never another exception, never the loader's last-resort "internal error" problem, and every
problem has a real position inside the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.inventory import Inventory
from monitor.inventory.load import InventoryError, parse_inventory

DATA = Path(__file__).parent / "data" / "inventory"
SEED_FILES = [DATA / "good-realistic.yaml", *sorted(DATA.glob("bad-*.yaml"))]
SEEDS = [p.read_bytes() for p in SEED_FILES]

# Deterministic (CI must not flake on a new random example) and quick. The deadline bounds the
# time per input loosely ("never hangs"); the loader's speed is held by bench/memory.py.
FUZZ = settings(
    max_examples=150,
    deadline=5000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

YAML_TOKENS = [
    b"\n", b" ", b"  ", b"\t", b":", b": ", b"- ", b"{", b"}", b"[", b"]", b",", b"&a ", b"*a",
    b"<<: *a", b"!!int ", b"!!python/object ", b"no", b"on", b"0123", b"1e3", b"1:30", b"~",
    b"'", b'"', b"#", b"---\n", b"...\n", b"%YAML 1.1\n", b"?", b"|", b">", b"\xff", b"\x00",
    b"\xe6\x91", b"\xef\xbb\xbf", b"${X}", b"2026-02-30", b"devices:", b"id: ", b"parent: ",
    b"!!int", b"!!float", b"!!binary ", b"!!timestamp ", b"!!set ", b"!!omap ",
    b"class: ", b"- {id: a, name: b, class: camera, address: 127.0.0.1}",
    # what a Chinese input method types instead of ':', ',', '-' and ' '
    "：".encode(), "，".encode(), "－ ".encode(), "\u3000".encode(), "\u3000\u3000".encode(),
]  # fmt: skip


def check(data: bytes) -> None:
    try:
        result = parse_inventory(data, "fuzz.yaml", env={}, base_dir=DATA)
    except InventoryError as exc:
        with pytest.raises(InventoryError) as zh:  # the same problems, in Chinese
            parse_inventory(data, "fuzz.yaml", env={}, base_dir=DATA, lang="zh")
        assert [(p.line, p.col) for p in zh.value.problems] == \
            [(p.line, p.col) for p in exc.problems]
        assert exc.problems, "an InventoryError always names at least one problem"
        n_lines = data.count(b"\n") + 1
        for p in exc.problems:
            assert "internal error" not in p.message, p
            assert p.file == "fuzz.yaml"
            assert 1 <= p.line <= n_lines + 1 and p.col >= 1, p
        return
    assert isinstance(result, Inventory)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real inventory with a few edits of the kinds staff make (and some they don't)."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "dupline", "dropline"]))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(YAML_TOKENS))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "replace" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        else:
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            if kind == "dupline":
                lines.insert(i, lines[i])
            else:
                del lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_give_only_inventory_errors(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map(b"".join))
def test_yaml_token_soup_gives_only_inventory_errors(data: bytes) -> None:
    check(data)


@FUZZ
@given(mutated())
def test_mutated_inventories_give_only_inventory_errors(data: bytes) -> None:
    check(data)


def test_seed_files_themselves() -> None:
    for data in SEEDS:
        check(data)
