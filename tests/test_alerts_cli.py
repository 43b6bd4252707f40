"""``hallmon notify test ROUTE`` against DingTalk/WeCom-like servers."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from monitor.cli.notify import add_notify_commands
from tests.agents.vendors import VendorServer


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hallmon")
    add_notify_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _inventory(tmp_path: Path, server: VendorServer, wecom_key: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(f"""
site: {{name: 榆阳区政务服务中心}}
notifications:
  channels:
    it-group: {{type: dingtalk, webhook: "${{HALLMON_TEST_DT_URL}}", secret_file: {tmp_path}/dt}}
    owners: {{type: wecom, webhook: "{server.wecom_url.replace(server.token, wecom_key)}"}}
  routes:
    - {{name: it, channels: [it-group, owners]}}
""")
    (tmp_path / "dt").write_text("SECcli\n")
    return path


def test_notify_test_sends_through_every_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with VendorServer(token="tok", secret="SECcli") as server:
        monkeypatch.setenv("HALLMON_TEST_DT_URL", server.dingtalk_url)
        code = _run(["notify", "test", "it", "--inventory", str(_inventory(tmp_path, server,
                                                                          "tok"))])
        assert code == 0, capsys.readouterr().out
        assert "测试消息" in server.bodies("dingtalk")[0]["markdown"]["title"]
        assert len(server.bodies("wecom")) == 1
    assert capsys.readouterr().out.splitlines() == ["it-group: ok", "owners: ok"]


def test_notify_test_reports_a_bad_key_without_leaking_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with VendorServer(token="tok", secret="SECcli") as server:
        monkeypatch.setenv("HALLMON_TEST_DT_URL", server.dingtalk_url)
        path = _inventory(tmp_path, server, "WRONGKEY")
        assert _run(["notify", "test", "it", "--inventory", str(path)]) == 1
    out = capsys.readouterr().out
    assert "owners: FAILED errcode 93000" in out and "WRONGKEY" not in out


def test_unknown_route_names_the_known_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with VendorServer() as server:
        monkeypatch.setenv("HALLMON_TEST_DT_URL", server.dingtalk_url)
        assert _run(["notify", "test", "nope", "--inventory",
                     str(_inventory(tmp_path, server, "k"))]) == 2
    assert "unknown route 'nope' (routes: it)" in capsys.readouterr().out
