"""`hallmon check` and `hallmon schema`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.inventory import schema
from monitor.inventory.load import schema_json

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data" / "inventory"
BAD = sorted(DATA.glob("bad-*.yaml"))


def test_check_shipped_inventory_prints_a_summary(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HALLMON_SNMP_COMMUNITY", "s3cret-community")
    assert main(["check", str(ROOT / "inventory.yaml")]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"{ROOT / 'inventory.yaml'}: OK"
    assert "site: 榆阳区政务服务中心 (Asia/Shanghai)" in lines
    assert "devices: 120" in lines
    assert "  by floor: 1F 62, 2F 58" in lines
    assert any(line.startswith("  by class: access_gate 1, camera 20,") for line in lines)
    assert "  hall-v2c: SNMPv2c community=<secret> port=161" in lines
    assert "s3cret-community" not in out


def test_check_v3_credentials_show_secrets_as_placeholders(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", str(DATA / "good-realistic.yaml")]) == 0
    out = capsys.readouterr().out
    assert (
        "  hall-v3: SNMPv3 user=monitor auth=sha256 auth_key=<secret> priv=aes "
        "priv_key=<secret> port=161"
    ) in out.splitlines()
    assert "priv-key-for-tests" not in out and "community-for-tests" not in out


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_check_bad_file_prints_problems_and_exits_1(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(DATA)
    for name in list(os.environ):
        if name.startswith("HALLMON_"):
            monkeypatch.delenv(name)
    assert main(["check", path.name]) == 1
    out, err = capsys.readouterr()
    expected = path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    n = len(expected)
    assert out == ""
    # The .expected files hold the stable FILE:LINE:COL: PATH: MESSAGE form; the CLI also names
    # each device by id after its index (devices[1] (kiosk-1f-03).address), for people.
    shown = [DEVICE_NAME.sub(r"\1", line) for line in err.splitlines()]
    assert shown == [*expected, f"{path.name}: {n} problem{'s' if n != 1 else ''}"]


DEVICE_NAME = re.compile(r"(: devices\[\d+\]) \([a-z0-9][a-z0-9._-]*\)")


def test_check_names_devices_by_id_and_speaks_chinese(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found: problems said devices[64] only (which one is that?), always in English."""
    monkeypatch.chdir(DATA)
    assert main(["check", "bad-device-named.yaml"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "bad-device-named.yaml:4:5: devices[1] (kiosk-1f-03): class 'kiosk' polls by SNMP "
        "(check 'host'): set 'credential'",
        "bad-device-named.yaml:4:90: devices[1] (kiosk-1f-03).location.floor: expected an "
        "integer, got the text 'two'",
        "bad-device-named.yaml: 2 problems"]
    assert main(["check", "--lang", "zh", "bad-device-named.yaml"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[1] == ("bad-device-named.yaml:4:90: devices[1] (kiosk-1f-03).location.floor: "
                      "应为整数，实际为文本 'two'")
    assert err[-1] == "bad-device-named.yaml: 2 个问题"
    assert main(["check", "--lang", "zh", "bad-ime-colon.yaml"]) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "bad-ime-colon.yaml:4:9: 全角冒号 '：' — 请改用半角 ':'")
    assert main(["check", "--lang", "zh", "bad-unknown-key.yaml"]) == 1
    assert "未知的键 'adress'（是否应为 'address'？）" in capsys.readouterr().err


def test_check_defaults_to_inventory_yaml_in_the_current_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 1
    assert "inventory.yaml:1:1: cannot read the file: No such file" in capsys.readouterr().err
    shutil.copy(ROOT / "inventory.yaml", tmp_path / "inventory.yaml")
    assert main(["check"]) == 0
    assert capsys.readouterr().out.startswith("inventory.yaml: OK\n")


def test_check_runs_as_a_command_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "check", str(DATA / "bad-yaml11-traps.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "bare 'no' is read as the boolean false" in proc.stderr


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "usage: hallmon" in capsys.readouterr().err


def test_committed_schema_matches_the_models() -> None:
    committed = (ROOT / "inventory.schema.json").read_text(encoding="utf-8")
    assert committed == schema_json(), "run `hallmon schema` and commit inventory.schema.json"
    assert json.loads(committed) == schema()
    assert committed.endswith("}\n")


def test_schema_command_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.schema.json"
    assert main(["schema", "-o", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == schema_json()
    assert main(["schema", "-o", "-"]) == 0
    assert capsys.readouterr().out.endswith(schema_json())


def test_output_into_a_closed_pipe_is_no_traceback() -> None:
    """Found walking the README: `hallmon report schedule --from ... | head -3` printed a
    BrokenPipeError traceback once head had its lines."""
    script = Path(sys.executable).with_name("hallmon")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "monitor.cli"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone (head had its lines): no race with a live one
    try:
        done = subprocess.run(
            [*command, "report", "schedule", "--from", "2025-01-01", "--to", "2025-12-31"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1


@pytest.mark.parametrize("keep", [False, True])
def test_the_demo_leaves_no_database_or_admin_token_behind(tmp_path: Path, keep: bool) -> None:
    """As found walking the README: every `hallmon demo` left /tmp/hallmon-demo-* behind, each
    with a database and an admin token file (42 of them on one machine). Removed at exit, unless
    --keep-state asks to keep it."""
    from tests.agents.proc import free_port

    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "demo", "--duration", "3",
         f"--web.listen-address=127.0.0.1:{port}", *(["--keep-state"] if keep else [])],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    left = list(tmp_path.glob("hallmon-demo-*"))
    state = re.search(r"state\s+(\S+)", proc.stderr)
    assert state is not None and Path(state.group(1)).parent == tmp_path
    if keep:
        assert left == [Path(state.group(1))] and (left[0] / "tokens.yaml").exists()
        assert f"state kept in {left[0]}" in proc.stderr
    else:
        assert left == []
