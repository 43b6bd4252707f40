"""The README and the guides against the ``hallmon`` command itself, so they cannot drift.

- The README's ``hallmon run`` flag table lists exactly the flags of ``hallmon run --help``,
  each with the default argparse gives it.
- Every ``hallmon ...`` command line in a shell block of the README and docs/ parses.
- Every ``--flag`` the README names is a flag of some ``hallmon`` sub-command.
- The README's ``hallmon check`` examples are what ``hallmon check`` prints.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path

import pytest

from monitor.cli import build_parser, main

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in [ROOT / "README.md",
                                                        *sorted((ROOT / "docs").glob("*.md"))]}
# Flags the README names that belong to other programs.
OTHER_PROGRAMS = {"--sites": "bench/sites_pg.py"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (nested) sub-command's parser by its path: {"run": ..., "tickets add": ...}."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def _run_table() -> dict[str, str]:
    """{flag: default text} from the rows of the README's ``hallmon run`` flags table."""
    section = README.split("`hallmon run` flags", 1)[1].split("\n\n", 2)[1]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `--"):
            continue
        flag_cell, default_cell = line.split("|")[1:3]
        flags = re.findall(r"`(--[\w.-]+)", flag_cell)
        defaults = re.findall(r"`([^`]*)`|(–|off)", default_cell)
        values = [a or b for a, b in defaults]
        assert len(values) == len(flags), f"README run table: one default per flag: {line}"
        rows.update(zip(flags, values, strict=True))
    return rows


def _matches(action: argparse.Action, text: str) -> bool:
    """Does the README's default ``text`` say what argparse's default is?"""
    if text == "off" and action.nargs == 0:  # a switch not given
        return action.default is not action.const
    if text == "–":
        return action.default is None
    if text.startswith("$"):  # an environment variable, read when the parser is built
        return action.default == os.environ.get(text[1:])
    value = action.type(text) if callable(action.type) else text
    return bool(value == action.default)


def test_readme_run_flag_table_is_hallmon_run_help() -> None:
    run = _subparsers(build_parser())["run"]
    actions = {s: a for a in run._actions for s in a.option_strings if s.startswith("--")}
    actions.pop("--help")
    table = _run_table()
    assert sorted(table) == sorted(actions), "README's `hallmon run` flags table vs --help"
    wrong = {f: (t, actions[f].default) for f, t in table.items() if not _matches(actions[f], t)}
    assert wrong == {}, "README default vs argparse default"


def _shell_commands() -> list[tuple[str, str]]:
    """(document, command line) of every ``hallmon ...`` line in a sh block, comments cut."""
    found = []
    for name, text in DOCS.items():
        for block in re.findall(r"^```sh\n(.*?)^```$", text, re.M | re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for command in line.split(" ; "):
                    if command.lstrip().startswith("hallmon "):
                        found.append((name, command.strip()))
    return found


COMMANDS = _shell_commands()


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_lines_parse(doc: str, command: str) -> None:
    words = shlex.split(command.split(" | ")[0], comments=True)
    # a synopsis: "hallmon schema [-o FILE]" is "hallmon schema -o FILE"
    words = [w.strip("[]") for w in words]
    if words[-1] == "...":  # "hallmon run --storage.url URL ...": the rest as above
        words = words[:-1]
    try:
        build_parser().parse_args(words[1:])
    except SystemExit as exc:
        if exc.code != 0:  # 0: --help
            pytest.fail(f"{doc}: `{command}` does not parse (exit {exc.code})")


def test_every_flag_the_readme_names_exists() -> None:
    known = {s for p in _subparsers(build_parser()).values()
             for a in p._actions for s in a.option_strings}
    named = set(re.findall(r"(?<![\w-])(--[a-z][\w.-]*[a-z])", README))
    unknown = sorted(named - known - set(OTHER_PROGRAMS))
    assert unknown == [], "flags named in the README that no hallmon command has"


def _block_after(marker: str) -> list[str]:
    return README.split(marker, 1)[1].split("```", 2)[1].strip("\n").splitlines()


def test_readme_check_example_is_what_check_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = _block_after("`hallmon check` validates the file")
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("HALLMON_SNMP_COMMUNITY", raising=False)
    shown_ok = example[1:example.index("...")]
    assert main(["check"]) == 0
    assert capsys.readouterr().out.splitlines()[:len(shown_ok)] == shown_ok
    bad = example[example.index("...") + 1:]
    assert bad[0].startswith("$ hallmon check ")
    assert main(["check", bad[0].split()[-1]]) == 1
    assert capsys.readouterr().err.splitlines() == bad[1:]


def test_operations_tokens_override_keeps_the_units_command_line() -> None:
    """docs/operations.md's `systemctl edit` drop-in replaces ExecStart: it must repeat the unit's
    flags (it once dropped --traps.listen-address) and add only the tokens file."""
    from tests.test_dashboards import unit_settings

    unit = unit_settings((ROOT / "deploy/hallmon.service").read_text(encoding="utf-8"))
    drop_in = re.search(r"^```ini\n(.*?)^```$", DOCS["docs/operations.md"], re.M | re.S)
    assert drop_in, "docs/operations.md: no systemd drop-in"
    override = unit_settings(drop_in[1])
    assert override["ExecStart"][0] == "", "the drop-in must clear ExecStart first"
    assert shlex.split(override["ExecStart"][1]) == [
        *shlex.split(unit["ExecStart"][0]), "--auth.tokens-file", "%d/tokens.yaml"]


def test_documented_sqlite_urls_to_system_paths_are_absolute() -> None:
    """``sqlite:///var/lib/...`` is the *relative* path var/lib/... to SQLAlchemy (the README's
    store copy example had it): an absolute path takes four slashes."""
    relative = [(name, url) for name, text in DOCS.items()
                for url in re.findall(r"sqlite:///(?:var|etc|opt|srv|tmp|home)/\S*", text)]
    assert relative == []


def test_readme_inventory_examples_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's inventory snippets, put together into one hall, pass ``hallmon check``:
    the device example (with the trap rule and push check examples on it), the credentials,
    maintenance, tickets, notifications, simulation and discovery examples."""
    import yaml

    from monitor.inventory.load import load_inventory

    blocks = [yaml.safe_load(b) for b in re.findall(r"^```yaml\n(.*?)^```$", README, re.M | re.S)]
    by_key = {key: block for block in blocks if block for key in block}
    device = by_key["devices"]["devices"][0]
    device["trap_rules"] = by_key["trap_rules"]["trap_rules"]
    device["extra_checks"] = [*device["extra_checks"], *by_key["extra_checks"]["extra_checks"]]
    credentials = by_key["credentials"]["credentials"]
    (tmp_path / "snmp-priv-key").write_text("priv-key-for-the-readme\n")
    credentials["hall-v3"]["priv_key_file"] = str(tmp_path / "snmp-priv-key")
    for name, value in [("HALLMON_SNMP_AUTH_KEY", "auth-key-for-the-readme"),
                        ("KIOSK_3F_TOKEN", "kiosk-token-for-the-readme"),
                        ("HALLMON_DINGTALK_WEBHOOK", "http://127.0.0.1:9/robot/send"),
                        ("HALLMON_DINGTALK_SECRET", "SEC-for-the-readme")]:
        monkeypatch.setenv(name, value)
    # the devices the examples name besides the kiosk: its parent, the faults' devices, a line
    others = [
        {"id": "sw-1f-a", "name": "a", "class": "switch", "address": "127.20.1.1",
         "credential": "hall-v2c"},
        {"id": "sw-1f-b", "name": "b", "class": "switch", "address": "127.20.1.2",
         "credential": "hall-v3", "parent": "sw-1f-a"},
        {"id": "prn-1f-02", "name": "p", "class": "printer", "address": "127.20.1.3",
         "credential": "hall-v2c", "parent": "sw-1f-a"},
        {"id": "line-1", "name": "l", "class": "line", "address": "127.20.1.4"},
    ]
    hall = {"site": {"name": "README"}, "credentials": credentials, "devices": [*others, device],
            **{k: by_key[k][k] for k in ("maintenance", "tickets", "notifications",
                                         "simulation", "discovery")}}
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(hall, allow_unicode=True, sort_keys=False), encoding="utf-8")
    inventory = load_inventory(path)
    assert inventory.device("kiosk-1f-03").public_name == "1F 自助终端3号"
