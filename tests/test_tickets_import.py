"""CSV import through the real CLI path: a year shaped like the hall's figures tallies back."""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from monitor.cli.tickets import add_report_command, add_tickets_commands
from monitor.reports import Report, build_report
from monitor.store import Store
from monitor.store.csvio import COLUMNS, CsvErrors, parse_tickets_csv
from monitor.store.localtime import period_label
from monitor.tally import tally

DATA = Path(__file__).parent / "data" / "tickets"
TZ = ZoneInfo("Asia/Shanghai")
# The hall's year: 513 maintenance jobs (issue 5), spread over working days.
CATS = {"fault": 221, "preventive": 96, "line": 38, "enrolment": 54, "installation": 22,
        "relocation": 12, "inspection": 60, "other": 10}


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hallmon")
    sub = parser.add_subparsers(dest="command", required=True)
    add_tickets_commands(sub)
    add_report_command(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


def synthetic_year(path: Path) -> list[date]:
    """513 jobs on 2025's working days, local times 08:30-18:00; returns each job's local day."""
    rng = random.Random(2025)
    workdays = [date(2025, 1, 1) + timedelta(d) for d in range(365)]
    workdays = [d for d in workdays if d.weekday() < 5]
    jobs = [c for c, n in CATS.items() for _ in range(n)]
    rng.shuffle(jobs)
    days = []
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i, cat in enumerate(jobs):
            d = rng.choice(workdays)
            # the first and last job sit at the edges of the year in local time
            d = date(2025, 1, 2) if i == 0 else date(2025, 12, 31) if i == 1 else d
            opened = datetime(d.year, d.month, d.day, 8, 30) + timedelta(minutes=rng.randrange(570))
            done = opened + timedelta(hours=rng.randrange(1, 30))
            w.writerow([opened.isoformat(sep=" "), cat, f"job {i}", "王", f"dev-{i % 40}",
                        ["kiosk", "camera", "line"][i % 3], str(i % 4 + 1), "政务中心",
                        ["张", "李", "刘"][i % 3], "closed", done.isoformat(sep=" "),
                        done.isoformat(sep=" "), "done"])
            days.append(d)
    return days


def _figure(report: Report, key: str) -> object:
    return next(r[1] for r in report.section("summary").rows if r[0].key == key)


@pytest.fixture(autouse=True)
def _away_from_the_shipped_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI picks ./inventory.yaml up by itself: these tests run without one unless given."""
    monkeypatch.chdir(tmp_path)


def test_a_year_of_jobs_tallies_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    days = synthetic_year(tmp_path / "2025.csv")
    assert cli("tickets", "import", str(tmp_path / "2025.csv"), "--db", db,
               "--timezone", "Asia/Shanghai", "--as", "admin") == 0
    assert "imported 513 tickets" in capsys.readouterr().out
    store = Store(db)
    try:
        lo, hi = date(2025, 1, 1), date(2025, 12, 31)
        for period in ("day", "week", "month", "quarter", "year"):
            expected = Counter(period_label(d, period) for d in days)
            got = {r.period: r.count for r in tally(store, period, lo, hi)}
            assert got == dict(expected), period
        assert {r.period: r.count for r in tally(store, "year", lo, hi)} == {"2025": 513}
        assert len(tally(store, "month", lo, hi)) == 12
        assert len(tally(store, "quarter", lo, hi)) == 4
        by_cat = {r.group: r.count for r in tally(store, "year", lo, hi, "category")}
        assert by_cat == CATS
        # twelve monthly reports add up to the yearly one
        monthly = [build_report(store, "month", date(2025, m, 1)) for m in range(1, 13)]
        opened = [_figure(r, "opened") for r in monthly]
        assert sum(opened) == 513 == _figure(build_report(store, "year", lo), "opened")
    finally:
        store.close()


def test_bad_rows_are_reported_by_line_and_nothing_is_imported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    assert cli("tickets", "import", str(DATA / "bad.csv"), "--db", db,
               "--timezone", "Asia/Shanghai") == 1
    err = capsys.readouterr().err
    assert err.splitlines()[1:] == [
        "line 3: category: unknown 'coffee' (one of fault, preventive, line, enrolment, "
        "installation, relocation, inspection, other)",
        "line 4: summary: required",
        "line 5: opened_at: not a date/time: 'not a date'",
        "line 6: status: unknown 'sideways' (one of open, in_progress, resolved, closed)",
        "line 7: resolved_at: before opened_at",
    ]
    store = Store(db)
    assert store.list_tickets()[1] == 0
    store.close()


def test_good_file_times_labels_and_defaults() -> None:
    rows = parse_tickets_csv((DATA / "good.csv").read_bytes(), TZ, list(CATS))
    assert rows[0].opened_at == datetime(2025, 3, 1, 1, 0, tzinfo=UTC)  # 09:00 Shanghai
    assert rows[1].category == "inspection" and rows[1].status == "open"
    assert rows[2].opened_at == datetime(2025, 3, 3, 1, 0, tzinfo=UTC)
    with pytest.raises(CsvErrors, match="unknown columns colour"):
        parse_tickets_csv("opened_at,category,summary,colour\n", TZ, list(CATS))


def test_cli_ticket_story(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ("--db", f"sqlite:///{tmp_path / 'log.db'}")
    assert cli("tickets", "add", "--category", "fault", "--summary", "LED dark", "--device",
               "led-1f", "--as", "li", *db) == 0
    assert cli("tickets", "start", "1", "--as", "zhang", *db) == 0
    assert cli("tickets", "comment", "1", "controller reset", *db) == 0
    assert cli("tickets", "close", "1", *db) == 1
    assert "cannot move to closed" in capsys.readouterr().err
    assert cli("tickets", "resolve", "1", "--resolution", "new PSU", *db) == 0
    assert cli("tickets", "close", "1", *db) == 0
    assert cli("tickets", "reopen", "1", "--note", "dark again", *db) == 0
    capsys.readouterr()
    assert cli("tickets", "show", "1", *db) == 0
    out = capsys.readouterr().out
    assert "controller reset" in out and out.count("status") == 4
    assert cli("tickets", "list", "--status", "open", "--json", *db) == 0
    assert '"total": 1' in capsys.readouterr().out
    assert cli("report", "--period", "day", "--format", "md", "--lang", "en", *db) == 0
    assert "## Jobs by category" in capsys.readouterr().out


def test_cli_without_the_daemons_state_directory_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found following the README on a fresh clone: `hallmon tickets add ...` in a directory
    without state/ (no daemon ever ran there) printed only SQLite's "unable to open database
    file". Say which directory is missing and what to do; create nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HALLMON_DB", raising=False)
    assert cli("tickets", "add", "--category", "fault", "--summary", "二楼闸机卡票") == 2
    err = capsys.readouterr().err
    assert "cannot open the store sqlite:///state/hallmon.db" in err
    assert "no directory 'state'" in err and "--db" in err
    assert "unable to open database file" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_import_never_guesses_the_sites_zone(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10.10 as found: a store first created by the CLI remembered UTC, and local times
    imported into it were stored 8 h off."""
    db = f"sqlite:///{tmp_path / 'log.db'}"
    assert cli("tickets", "import", str(DATA / "good.csv"), "--db", db) == 1
    assert "timezone is unknown" in capsys.readouterr().err
    inv = tmp_path / "inventory.yaml"
    inv.write_text("site: {name: 大厅, timezone: Asia/Shanghai}\n", encoding="utf-8")
    assert cli("tickets", "import", str(DATA / "good.csv"), "--db", db) == 0  # ./inventory.yaml
    capsys.readouterr()
    assert cli("tickets", "list", "--db", db) == 0
    out = capsys.readouterr().out
    assert "2025-03-01 09:00" in out and "Z " not in out  # printed in site time
    store = Store(db)
    assert store.tz.key == "Asia/Shanghai"
    assert min(t.opened_at for t in store.list_tickets()[0]) == datetime(2025, 3, 1, 1,
                                                                         tzinfo=UTC)
    store.close()
    # the zone is never changed silently on a store that holds rows
    assert cli("tickets", "list", "--db", db, "--timezone", "UTC") == 2
    assert "not UTC" in capsys.readouterr().err


def test_cli_add_checks_the_device_against_the_inventory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10.11 as found: a misspelt device was accepted and class, floor and owner left
    empty, so tallies by class, floor and owner missed every manual ticket."""
    db = ("--db", f"sqlite:///{tmp_path / 'log.db'}")
    (tmp_path / "inventory.yaml").write_text(
        "site: {name: 大厅}\n"
        "devices:\n"
        "  - {id: led-1f-main, name: 一楼LED屏, class: led_controller, address: 127.20.1.50,\n"
        "     location: {floor: 1}, owner: 综合科}\n", encoding="utf-8")
    assert cli("tickets", "add", "--category", "fault", "--summary", "LED dark", "--device",
               "led-1f", *db) == 1
    assert "unknown device 'led-1f' (did you mean 'led-1f-main'?)" in capsys.readouterr().err
    assert cli("tickets", "add", "--category", "fault", "--summary", "LED dark", "--device",
               "led-1f-main", *db) == 0
    store = Store(db[1])
    (t,) = store.list_tickets()[0]
    assert (t.device_class, t.floor, t.owner) == ("led_controller", "1", "综合科")
    assert {r.group: r.count for r in tally(store, "year", date(2020, 1, 1), date(2030, 1, 1),
                                            "class")} == {"led_controller": 1}
    store.close()


# ---- what Excel on Chinese Windows writes (issue 11) ----------------------------------------
def test_excel_gbk_csv_imports_and_says_which_encoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found: a CSV saved by Excel on Chinese Windows (GBK, Chinese headers, 2025/3/7 9:30,
    Chinese category labels) crashed `tickets import` with a UnicodeDecodeError traceback."""
    db = ("--db", f"sqlite:///{tmp_path / 'log.db'}", "--timezone", "Asia/Shanghai")
    assert cli("tickets", "import", str(DATA / "excel-gbk.csv"), *db) == 0
    assert "imported 3 tickets" in (out := capsys.readouterr().out)
    assert "(read as GB18030/GBK)" in out
    store = Store(db[1], timezone="Asia/Shanghai")
    try:
        page, _ = store.list_tickets()
    finally:
        store.close()
    first = page[-1]
    assert (first.category, first.summary, first.device_id, first.status) == (
        "fault", "一楼叫号机黑屏", "kiosk-1f-03", "resolved")
    assert first.opened_at == datetime(2025, 3, 7, 1, 30, tzinfo=UTC)  # 09:30 Shanghai
    assert first.resolved_at == datetime(2025, 3, 7, 3, 5, tzinfo=UTC)
    assert [t.category for t in page] == ["line", "inspection", "fault"]
    assert page[0].opened_at == datetime(2025, 3, 11, 16, 0, tzinfo=UTC)  # local midnight


@pytest.mark.parametrize(("prefix", "encoding", "name"), [
    (b"\xef\xbb\xbf", "utf-8", "UTF-8 (BOM)"), (b"", "utf-8", "UTF-8"),
    (b"", "gb18030", "GB18030/GBK")])
def test_the_same_file_in_each_encoding(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        prefix: bytes, encoding: str, name: str) -> None:
    text = (DATA / "excel-gbk.csv").read_bytes().decode("gbk")
    f = tmp_path / "log.csv"
    f.write_bytes(prefix + text.encode(encoding))
    assert cli("tickets", "import", str(f), "--db", f"sqlite:///{tmp_path / 'l.db'}",
               "--timezone", "Asia/Shanghai") == 0
    assert f"imported 3 tickets from {f} (read as {name})" in capsys.readouterr().out


def test_undecodable_bytes_name_the_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "log.csv"
    f.write_bytes("opened_at,category,summary\n2025-03-07,fault,叫号机\n".encode("gbk")
                  + b"2025-03-08,fault,\x80\xff\n")
    assert cli("tickets", "import", str(f), "--db", f"sqlite:///{tmp_path / 'l.db'}",
               "--timezone", "Asia/Shanghai") == 1
    err = capsys.readouterr().err
    assert "line 3: byte 0x80 fits neither UTF-8 nor GB18030/GBK" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text", ["2025/3/7 9:30", "2025/03/07 09:30:00", "2025-3-7 9:30",
                                  "2025-03-07T09:30:00+08:00", "2025-03-07 09:30"])
def test_excel_date_forms(text: str) -> None:
    csv_text = f"opened_at,category,summary\n{text},fault,x\n"
    (row,) = parse_tickets_csv(csv_text, TZ, list(CATS))
    assert row.opened_at == datetime(2025, 3, 7, 1, 30, tzinfo=UTC)
    with pytest.raises(CsvErrors, match=r"line 2: opened_at: not a date/time: '2025/13/7'"):
        parse_tickets_csv("opened_at,category,summary\n2025/13/7,fault,x\n", TZ, list(CATS))


def test_chinese_category_labels_on_the_cli(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = ("--db", f"sqlite:///{tmp_path / 'log.db'}")
    assert cli("tickets", "add", "--category", "故障维修", "--summary", "LED 黑屏", *db) == 0
    assert cli("tickets", "list", "--category", "故障维修", "--json", *db) == 0
    out = capsys.readouterr().out
    assert '"total": 1' in out and '"category": "fault"' in out
    assert cli("tickets", "add", "--category", "咖啡", "--summary", "x", *db) == 1
    assert "unknown category '咖啡'" in capsys.readouterr().err
