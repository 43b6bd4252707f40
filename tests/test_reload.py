"""Reload: a broken file keeps the last good inventory; a good one is swapped in whole."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.inventory import Inventory
from monitor.inventory.load import InventoryError
from monitor.inventory.reload import InventoryHolder
from tests.conftest import Clock

ONE = (
    "site: {name: 大厅}\ndevices:\n"
    "  - {id: cam-1, name: 摄像机1, class: camera, address: 127.20.3.1}\n"
)
TWO = ONE + "  - {id: cam-2, name: 摄像机2, class: camera, address: 127.20.3.2}\n"
BROKEN = ONE + "  - {id: cam-1, name: 摄像机1, class: kamera, address: 127.20.3.1}\n"


@pytest.fixture
def inv_file(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(ONE, encoding="utf-8")
    return path


def holder_for(path: Path, clock: Clock | None = None) -> tuple[InventoryHolder, list[Inventory]]:
    holder = InventoryHolder(path, env={}, clock=clock or Clock())
    holder.load()
    seen: list[Inventory] = []
    holder.subscribe(seen.append)
    return holder, seen


def ids(inv: Inventory) -> list[str]:
    return [d.id for d in inv.devices]


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")  # tiny files: fine inside a test coroutine


def remove(path: Path) -> None:
    path.unlink()


def save_by_rename(path: Path, text: str) -> None:
    """What editors do: write a new file beside the old one, then rename it over."""
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def test_first_load_failure_is_loud(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    holder = InventoryHolder(path, env={})
    with pytest.raises(RuntimeError):
        holder.current  # noqa: B018
    with pytest.raises(InventoryError, match="unknown class 'kamera'"):
        holder.load()
    with pytest.raises(InventoryError, match="cannot read the file"):
        InventoryHolder(tmp_path / "absent.yaml").load()


def test_good_reload_swaps_and_notifies(inv_file: Path) -> None:
    clock = Clock()
    holder, seen = holder_for(inv_file, clock)
    first = holder.current
    assert holder.last_reload_success_time == 1000.0
    inv_file.write_text(TWO, encoding="utf-8")
    clock.now = 2000.0
    outcome = holder.reload()
    assert outcome.ok and outcome.changed and outcome.problems == ()
    assert ids(holder.current) == ["cam-1", "cam-2"]
    assert seen == [holder.current] and holder.current is not first
    assert holder.last_reload_successful and holder.last_reload_success_time == 2000.0


def test_broken_reload_keeps_the_last_good(
    inv_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    holder, seen = holder_for(inv_file, clock)
    good = holder.current
    inv_file.write_text(BROKEN, encoding="utf-8")
    clock.now = 2000.0
    outcome = holder.reload()
    assert not outcome.ok and not outcome.changed
    assert [str(p) for p in outcome.problems] == [
        f"{inv_file}:4:10: devices[1].id: duplicate device id 'cam-1' (first at devices[0])",
        f"{inv_file}:4:36: devices[1].class: unknown class 'kamera' (did you mean 'camera'?)",
        f"{inv_file}:4:53: devices[1].address: duplicate address '127.20.3.1' (also devices[0] "
        "'cam-1')",
    ]
    assert holder.current is good and seen == []
    assert not holder.last_reload_successful
    assert holder.last_reload_success_time == 1000.0
    assert "keeping the last good one (3 problems)" in caplog.text
    inv_file.write_text(TWO, encoding="utf-8")
    assert holder.reload().changed
    assert holder.last_reload_successful and ids(holder.current) == ["cam-1", "cam-2"]


def test_unchanged_reload_is_ok_but_notifies_nobody(inv_file: Path) -> None:
    holder, seen = holder_for(inv_file)
    outcome = holder.reload()
    assert outcome.ok and not outcome.changed and seen == []


def test_missing_file_on_reload_keeps_the_last_good(inv_file: Path) -> None:
    holder, _ = holder_for(inv_file)
    inv_file.unlink()
    outcome = holder.reload()
    assert not outcome.ok and "cannot read the file" in str(outcome.problems[0])
    assert ids(holder.current) == ["cam-1"]


async def test_watch_step_sees_a_save_by_rename(inv_file: Path) -> None:
    holder, seen = holder_for(inv_file)
    assert await holder.check_file() is None  # nothing changed
    save_by_rename(inv_file, ONE)
    assert await holder.check_file() is None  # same content, new inode: nothing to do
    save_by_rename(inv_file, TWO)
    outcome = await holder.check_file()
    assert outcome is not None and outcome.ok and outcome.changed
    assert ids(seen[-1]) == ["cam-1", "cam-2"]
    assert await holder.check_file() is None


async def test_watch_step_tolerates_a_briefly_missing_file(inv_file: Path) -> None:
    holder, seen = holder_for(inv_file)
    remove(inv_file)
    assert await holder.check_file() is None
    assert holder.last_reload_successful and ids(holder.current) == ["cam-1"]
    write(inv_file, TWO)
    outcome = await holder.check_file()
    assert outcome is not None and outcome.changed and len(seen) == 1


async def test_watch_step_reports_a_broken_save_once(inv_file: Path) -> None:
    holder, _ = holder_for(inv_file)
    write(inv_file, BROKEN)
    outcome = await holder.check_file()
    assert outcome is not None and not outcome.ok
    assert await holder.check_file() is None  # same broken bytes: not re-reported every poll
    assert ids(holder.current) == ["cam-1"]


async def test_watch_loop_polls_with_the_injected_sleep(inv_file: Path) -> None:
    holder, seen = holder_for(inv_file)
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    task = asyncio.create_task(holder.watch(7.0, sleep=fake_sleep))
    try:
        write(inv_file, TWO)
        for _ in range(2000):  # bounded: the change shows within a few polls
            if seen:
                break
            await asyncio.sleep(0.001)
        assert seen and ids(seen[0]) == ["cam-1", "cam-2"]
        assert set(sleeps) == {7.0}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_sighup_reloads(inv_file: Path) -> None:
    holder, seen = holder_for(inv_file)
    loop = asyncio.get_running_loop()
    holder.install_sighup(loop)
    try:
        write(inv_file, TWO)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(2000):  # bounded: the signal arrives within a few loop iterations
            if seen:
                break
            await asyncio.sleep(0.001)
            await holder.wait_reloads()
        assert seen and ids(holder.current) == ["cam-1", "cam-2"]
    finally:
        holder.uninstall_sighup(loop)


async def test_reload_from_a_worker_thread_notifies_on_the_loop(inv_file: Path) -> None:
    holder, _ = holder_for(inv_file)
    holder.bind_loop(asyncio.get_running_loop())
    threads: list[int] = []
    done = asyncio.Event()

    def on_swap(inventory: Inventory) -> None:
        threads.append(threading.get_ident())
        done.set()

    holder.subscribe(on_swap)
    write(inv_file, TWO)
    outcome = await asyncio.to_thread(holder.reload)  # as FastAPI runs a sync /-/reload
    assert outcome.changed
    await asyncio.wait_for(done.wait(), timeout=5)
    assert threads == [threading.get_ident()]


def test_a_failing_subscriber_does_not_stop_the_others(inv_file: Path) -> None:
    holder = InventoryHolder(inv_file, env={})
    holder.load()
    seen: list[Inventory] = []

    def broken(inventory: Inventory) -> None:
        raise ValueError("boom")

    holder.subscribe(broken)
    holder.subscribe(seen.append)
    inv_file.write_text(TWO, encoding="utf-8")
    assert holder.reload().ok and len(seen) == 1


# ---- the child-process parse (large files): the same answers as in-process ----

SECRETS = ONE + (
    "credentials: {c: {version: 2c, community: '${COMM}'}}\n"
    "notifications:\n  channels:\n"
    "    robot: {type: dingtalk, webhook: '${HOOK}', secret_file: sign.txt}\n"
)


def test_isolated_parse_gives_the_same_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(SECRETS, encoding="utf-8")
    (tmp_path / "sign.txt").write_text("sign-s3cret\n", encoding="utf-8")
    env = {"COMM": "comm-s3cret", "HOOK": "https://robot.invalid/?access_token=tok"}
    monkeypatch.chdir(tmp_path)  # a relative path: base_dir must mean the same in the child
    in_process = InventoryHolder(Path("inventory.yaml"), env=env, isolate_above=None).load()
    isolated = InventoryHolder(Path("inventory.yaml"), env=env, isolate_above=0).load()
    assert isolated == in_process
    community = isolated.credentials["c"].community_secret
    assert community is not None and community.get_secret_value() == "comm-s3cret"
    robot = isolated.notifications.channels["robot"]
    assert robot.secret.get_secret_value() == "sign-s3cret"  # type: ignore[union-attr]


def test_isolated_parse_sees_the_process_environment_of_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(ONE + "credentials: {c: {version: 2c, community: '${HM_T_COMM}'}}\n",
                    encoding="utf-8")  # fmt: skip
    monkeypatch.setenv("HM_T_COMM", "from-env")
    community = InventoryHolder(path, isolate_above=0).load().credentials["c"].community_secret
    assert community is not None and community.get_secret_value() == "from-env"


def test_isolated_parse_reports_the_same_problems(inv_file: Path) -> None:
    holder = InventoryHolder(inv_file, env={}, isolate_above=0)
    holder.load()
    inv_file.write_text(BROKEN, encoding="utf-8")
    isolated = holder.reload()
    in_process = InventoryHolder(inv_file, env={}, isolate_above=None)
    with pytest.raises(InventoryError) as exc:
        in_process.load()
    assert not isolated.ok and list(isolated.problems) == exc.value.problems
    assert len(isolated.problems) == 3 and ids(holder.current) == ["cam-1"]
    with pytest.raises(InventoryError, match="unknown class 'kamera'"):
        InventoryHolder(inv_file, env={}, isolate_above=0).load()


async def test_isolated_parse_on_the_watch_path(inv_file: Path) -> None:
    holder = InventoryHolder(inv_file, env={}, isolate_above=0)
    holder.load()
    save_by_rename(inv_file, TWO)
    outcome = await holder.check_file()
    assert outcome is not None and outcome.ok and outcome.changed
    assert ids(holder.current) == ["cam-1", "cam-2"]


def big_hall(n: int = 3000) -> str:
    """An inventory large enough to be parsed in a child process (>= 256 KiB): slow to parse."""
    lines = [f"  - {{id: cam-{i:05d}, name: 摄像机{i}, class: camera, "
             f"address: 127.21.{i // 250}.{i % 250 + 1}}}\n" for i in range(n)]
    return "site: {name: 大厅}\ndevices:\n" + "".join(lines)


async def until(what: Callable[[], bool]) -> None:
    """Wait (bounded: 30 s) until ``what()`` holds."""
    for _ in range(3000):
        if what():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out: {what}")


async def test_concurrent_reloads_are_serialised_and_the_newest_file_wins(
    inv_file: Path,
) -> None:
    """Issue 10, point 9, as found: a reload starts parsing a big file; the file is saved again
    (small) and the watch reloads it at once. The big parse finished last and swapped the older
    inventory in, while the watch held the newer hash: the old inventory stayed for good."""
    import hashlib

    holder, seen = holder_for(inv_file)
    big = big_hall()
    write(inv_file, big)
    first = asyncio.get_running_loop().create_task(holder.areload())  # POST /-/reload
    await until(lambda: holder._seen_sha == hashlib.sha256(big.encode()).hexdigest())
    save_by_rename(inv_file, TWO)
    await holder.check_file()  # the watch notices the newer save
    outcome = await first
    assert outcome.ok
    assert ids(holder.current) == ["cam-1", "cam-2"]
    assert seen and ids(seen[-1]) == ["cam-1", "cam-2"]
    assert await holder.check_file() is None  # nothing newer to load ...
    assert ids(holder.current) == ["cam-1", "cam-2"]  # ... and the newest stays in force


async def test_reloads_from_threads_and_the_loop_take_turns(inv_file: Path) -> None:
    """``POST /-/reload`` (a worker thread), SIGHUP and the watch at once, while the file
    changes under them: whatever the order, the file's final content is what is in force."""
    holder, seen = holder_for(inv_file)
    loop = asyncio.get_running_loop()
    holder.bind_loop(loop)
    holder.install_sighup(loop)
    try:
        write(inv_file, big_hall())
        threaded = asyncio.ensure_future(asyncio.to_thread(holder.reload))
        os.kill(os.getpid(), signal.SIGHUP)
        watched = asyncio.ensure_future(holder.check_file())
        await asyncio.sleep(0.05)
        save_by_rename(inv_file, TWO)
        await asyncio.gather(threaded, watched, holder.areload())
        await holder.wait_reloads()
        await until(lambda: bool(seen) and ids(seen[-1]) == ["cam-1", "cam-2"])
        assert ids(holder.current) == ["cam-1", "cam-2"]
        assert await holder.check_file() is None
    finally:
        holder.uninstall_sighup(loop)


async def test_many_threaded_reloads_at_once_cannot_starve_the_loops_turn(
    inv_file: Path,
) -> None:
    """reload() from threads waits for its turn on the loop; the turn's own reading and parsing
    must not need a thread of the pool those callers occupy (else: a deadlock)."""
    holder, seen = holder_for(inv_file)
    holder.bind_loop(asyncio.get_running_loop())
    write(inv_file, TWO)
    callers = [asyncio.to_thread(holder.reload) for _ in range(40)]  # > the default pool
    outcomes = await asyncio.wait_for(asyncio.gather(*callers), timeout=120)
    assert all(o.ok for o in outcomes)
    assert [o.changed for o in outcomes].count(True) == 1  # one swap, the rest unchanged
    assert ids(holder.current) == ["cam-1", "cam-2"] and len(seen) == 1
