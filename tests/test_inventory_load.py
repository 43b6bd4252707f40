"""The inventory loader: one bad file per rule with the exact problems it must produce.

tests/data/inventory/bad-<rule>.yaml sits beside bad-<rule>.expected (one problem per line, in
file order). To add a rule: add both files; the table below picks them up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.inventory import Inventory
from monitor.inventory.load import (
    InventoryError,
    Problem,
    format_path,
    load_inventory,
    parse_inventory,
)

DATA = Path(__file__).parent / "data" / "inventory"
BAD = sorted(DATA.glob("bad-*.yaml"))
SITE = "site: {name: 测试大厅}\n"


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, env={}, display_name=path.name)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_file_gives_exactly_the_expected_problems(path: Path) -> None:
    expected = path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    assert problems_of(path) == expected


def test_every_rule_has_a_bad_file() -> None:
    rules = {
        "unknown-key", "duplicate-key", "duplicate-id", "duplicate-address", "unknown-refs",
        "parent-cycle", "timeout-defaults", "timeout-check", "thresholds", "snmp-v3",
        "unsafe-id", "yaml11-traps", "tabs", "empty", "not-mapping", "not-utf8", "syntax",
        "selectors", "missing-credential", "missing-keys", "secrets", "calendar", "reports",
        "public", "trap-rules",
        "ime-colon", "ime-comma", "ime-space", "unknown-channel-type", "device-named",
    }  # fmt: skip
    assert {p.stem.removeprefix("bad-") for p in BAD} >= rules


def test_problem_prints_as_file_line_col_path_message() -> None:
    p = Problem("inventory.yaml", 12, 5, "devices[4].parent", "unknown device 'sw-1f-b'")
    assert str(p) == "inventory.yaml:12:5: devices[4].parent: unknown device 'sw-1f-b'"
    assert str(Problem("a.yaml", 1, 1, "", "the file is empty")) == "a.yaml:1:1: the file is empty"


def test_format_path() -> None:
    assert format_path(("devices", 4, "parent")) == "devices[4].parent"
    assert format_path(("classes", "kiosk", "checks", 0)) == "classes.kiosk.checks[0]"
    assert format_path(("notifications", "channels", "a b")) == 'notifications.channels["a b"]'


def test_file_name_is_the_path_as_given(tmp_path: Path) -> None:
    (tmp_path / "inv.yaml").write_text("site: {name: x}\nbogus: 1\n", encoding="utf-8")
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "inv.yaml")
    assert str(caught.value).startswith(f"{tmp_path / 'inv.yaml'}:2:1: ")


def test_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read the file: No such file"):
        load_inventory(tmp_path / "absent.yaml")


def test_good_realistic_example_loads() -> None:
    inv = load_inventory(DATA / "good-realistic.yaml", env={})
    assert isinstance(inv, Inventory)
    assert len(inv.devices) == 13
    cred = inv.credentials["hall-v3"]
    assert cred.priv_secret is not None
    assert cred.priv_secret.get_secret_value() == "priv-key-for-tests"  # from priv_key_file
    kiosk = inv.device("kiosk-1f-02")
    assert kiosk.location.floor == 1 and kiosk.location.window == "A-02"  # merge key
    assert inv.tickets.auto[1].when == ["down", "degraded"]


def test_env_references_resolve_and_never_show(tmp_path: Path) -> None:
    text = (
        SITE + "credentials: {c: {version: 2c, community: '${COMM}'}}\n"
        "notifications:\n  channels:\n"
        "    robot: {type: dingtalk, webhook: '${HOOK}', secret: '${SIGN:-sign-default}'}\n"
    )
    env = {"COMM": "community-s3cret", "HOOK": "https://robot.invalid/?access_token=tok-s3cret"}
    inv = parse_inventory(text, env=env)
    community = inv.credentials["c"].community_secret
    assert community is not None and community.get_secret_value() == "community-s3cret"
    channel = inv.notifications.channels["robot"]
    assert channel.webhook.get_secret_value() == env["HOOK"]  # type: ignore[union-attr]
    assert channel.secret.get_secret_value() == "sign-default"  # type: ignore[union-attr]
    shown = repr(inv) + str(inv) + inv.model_dump_json()
    assert "s3cret" not in shown and "sign-default" not in shown


def test_secret_literals_are_not_echoed_in_problems() -> None:
    text = SITE + "credentials: {c: {version: 2c, community: no-such-secret-123}}\n"
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, env={})
    assert "no-such-secret-123" not in str(caught.value)
    text = SITE + "credentials: {c: {version: 2c, community: 12345}}\n"
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, env={})
    assert "12345" not in str(caught.value)


def test_all_problems_are_reported_at_once() -> None:
    text = SITE + (
        "devices:\n"
        "  - {id: a, name: A, class: camera, address: 127.20.0.1, parent: zz}\n"
        "  - {id: a, name: B, class: kamera, address: 127.20.0.1, extra: 1}\n"
    )
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, "t.yaml", env={})
    assert [str(p) for p in caught.value.problems] == [
        "t.yaml:3:66: devices[0].parent: unknown device 'zz'",
        "t.yaml:4:10: devices[1].id: duplicate device id 'a' (first at devices[0])",
        "t.yaml:4:29: devices[1].class: unknown class 'kamera' (did you mean 'camera'?)",
        "t.yaml:4:46: devices[1].address: duplicate address '127.20.0.1' (also devices[0] 'a')",
        "t.yaml:4:58: devices[1]: unknown key 'extra'"
        " (known keys: address, checks, class, credential, extra_checks, id, location,"
        " maintenance, name, owner, parent, public, public_name, snmp_port, tags, trap_rules)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\ufeffsite: {name: x}\n", None),  # a BOM is fine
        ("site: {name: x}\n---\nsite: {name: y}\n", "2:1: YAML syntax error: expected a single"),
        ("site: {name: x}\ndefaults: {interval: 2026-02-30}\n", "2:22: YAML syntax error"),
        ("site: {name: x}\nx: !!python/object:os.system {}\n", "2:4: YAML syntax error"),
        ("site: {name: x}\nsite: {name: y}\n", "2:1: site: duplicate key 'site'"),
        ("site: &a {name: *a}\n", "1:7: site.name: expected a string, got a mapping"),
        ("site: {name: x}\ndevices: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("site: {name: x}\nnote: \x07\n", "2:7: character '\\x07' (U+0007) is not allowed in YAML"),
        (  # a bare `on:` key is the text "on" (as in YAML 1.2), not the boolean true
            "site: {name: x}\ntickets: {auto: [{on: [down]}]}\n",
            "2:19: tickets.auto[0]: unknown key 'on' (known keys: assignee,",
        ),
        ("site: {name: 8:30}\n", "1:14: site.name: bare '8:30' is read as a base-60 number"),
        (
            "site: {name: '0123'}\ndefaults: {failure_threshold: 010}\n",
            "2:31: defaults.failure_threshold: bare '010' is read as an octal",
        ),
    ],
)
def test_odd_yaml(text: str, expected: str | None) -> None:
    if expected is None:
        parse_inventory(text, env={})
        return
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, "t.yaml", env={})
    assert expected in str(caught.value)
    assert "internal error" not in str(caught.value)


def test_partial_data_still_gets_cross_reference_checks() -> None:
    # 'defaults' and one device are broken; the unknown parent of the other is still found.
    text = SITE + (
        "defaults: {interval: fast}\n"
        "devices:\n"
        "  - {id: a, name: A, class: camera, address: 127.20.0.1, parent: nope}\n"
        "  - {id: b, name: B, class: camera, address: [1, 2]}\n"
    )
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, "t.yaml", env={})
    lines = [str(p) for p in caught.value.problems]
    assert "t.yaml:4:66: devices[0].parent: unknown device 'nope'" in lines
    assert any(
        line.startswith("t.yaml:2:22: defaults.interval: invalid duration") for line in lines
    )
    assert "t.yaml:5:46: devices[1].address: expected a string, got a list" in lines


def test_ime_characters_in_text_are_not_slips() -> None:
    """Full-width punctuation inside values, quotes, comments and block text is Chinese text:
    a file that fails for another reason must still get its real problem."""
    from monitor.inventory import ime

    text = (SITE + "devices:\n"
            "  - id: cam-1f-01  # 注意：一楼，东侧\n"
            "    name: 一楼摄像机：东门\n"
            "    class: camera\n"
            "    address: 127.20.1.21\n"
            "    tags: ['一楼，东侧']\n"
            "    owner: |\n"
            "      说明：镜头朝向门口，勿动\n"
            "      负责人：张工\n"
            "    colour: 红\n")
    assert list(ime.scan(text)) == []
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, "t.yaml")
    (problem,) = caught.value.problems
    assert str(problem).startswith("t.yaml:11:5: devices[0]: unknown key 'colour' (known keys")


def test_ime_slips_are_found_where_typed() -> None:
    from monitor.inventory import ime

    assert list(ime.scan("site：\n  name: x\n")) == [(1, 5, "：")]
    assert list(ime.scan("a: [b， c]\nb: {x：1}\n")) == [(1, 6, "，"), (2, 6, "：")]
    assert list(ime.scan("devices:\n－ id: a\n\u3000 b: c\n")) == [(2, 1, "－"), (3, 1, "\u3000")]


def test_ticket_rules_take_category_labels_in_chinese() -> None:
    text = SITE + "tickets:\n  auto:\n    - {classes: [line], category: 线路网络}\n"
    inventory = parse_inventory(text, "t.yaml")
    assert inventory.tickets.auto[0].category == "line"
    with pytest.raises(InventoryError, match="unknown ticket category '咖啡'"):
        parse_inventory(text.replace("线路网络", "咖啡"), "t.yaml")
