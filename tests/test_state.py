"""The state machine as stories: results in, transitions and notices out (pure, no clock)."""

from __future__ import annotations

import pytest

from monitor.state import (
    CheckPolicy,
    CheckState,
    CheckStatus,
    DeviceSpec,
    DeviceStatus,
    HallState,
    advance,
    flap_percent,
    path_status,
    restored,
    rollup,
)

QUICK = CheckPolicy(failure_threshold=1, success_threshold=1)
DEFAULT = CheckPolicy()


def story(results: str, policy: CheckPolicy = DEFAULT) -> list[str]:
    """Feed "S"/"F" results one per second; render transitions as "N from->to [flags]"."""
    state = CheckState()
    out = []
    for n, r in enumerate(results, start=1):
        state, t = advance(state, r == "S", None if r == "S" else "timeout", policy, float(n))
        if t is None:
            continue
        flags = [name for name, on in (("initial", t.initial), ("flapping", t.flapping),
                                       ("flap+", t.flap_started), ("flap-", t.flap_stopped)) if on]
        out.append(" ".join([f"{n} {t.from_}->{t.to}", *flags]))
    return out


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        pytest.param("FFF", ["3 unknown->down initial"], id="three failures: one hard DOWN"),
        pytest.param("FF", [], id="two failures: still unknown"),
        pytest.param("S", ["1 unknown->up initial"], id="first success: UP, no recovery"),
        pytest.param("SFFSFF", ["1 unknown->up initial"], id="a success in between: nothing"),
        pytest.param("SFFFF", ["1 unknown->up initial", "4 up->down"], id="up then three failures"),
        pytest.param("FFFSS", ["3 unknown->down initial", "5 down->up"],
                     id="two successes after down: one UP"),
        pytest.param("FFFSFS", ["3 unknown->down initial"], id="one success after down: no"),
        pytest.param("FFFFFFFF", ["3 unknown->down initial"], id="still down: no repeat"),
    ],
)
def test_check_story(results: str, expected: list[str]) -> None:
    assert story(results) == expected


def test_flapping_one_notice_then_quiet_then_stops() -> None:
    # A line that answers every other poll, then settles. Thresholds of 1 so every flip is a
    # hard change: exactly the case where paging each one would flood the on-call phone.
    got = story("SF" * 15 + "S" * 25, QUICK)
    assert got[:2] == ["1 unknown->up initial", "2 up->down"]
    started = [g for g in got if "flap+" in g]
    stopped = [g for g in got if "flap-" in g]
    # The third hard DOWN within the window (results 2, 4, 6) starts it before the percent does
    # (it would at 10: 9 weighted changes, just over 50%).
    assert started == ["6 up->down flapping flap+"]
    assert len(stopped) == 1
    # Below 25% after 16 steady results (46), and at most one hard DOWN left in the window.
    assert stopped == ["49 up->up flapping flap-"]
    between = got[got.index(started[0]) + 1 : got.index(stopped[0])]
    assert between and all("flapping" in g and "flap+" not in g for g in between)


@pytest.mark.parametrize(
    ("bits", "expected"),
    [
        pytest.param("S" * 21, 0.0, id="steady"),
        pytest.param("SF" * 10 + "S", 100.0, id="every result flips"),
        pytest.param("F" + "S" * 20, 4.0, id="oldest change weighs 0.8"),
        pytest.param("S" * 20 + "F", 6.0, id="newest change weighs 1.2"),
    ],
)
def test_flap_percent_weights(bits: str, expected: float) -> None:
    history = 0
    for b in bits:  # oldest first; newest ends in bit 0
        history = (history << 1) | (b == "S")
    assert flap_percent(history, len(bits), 21) == pytest.approx(expected)


def test_flapping_hysteresis_needs_low_threshold_to_stop() -> None:
    policy = CheckPolicy(failure_threshold=1, success_threshold=1, flap_high=50, flap_low=25)
    state = CheckState()
    for n, r in enumerate("SF" * 6, start=1):
        state, _ = advance(state, r == "S", None if r == "S" else "x", policy, float(n))
    assert state.flapping
    seen_between = False
    for n in range(30):  # settle: the percentage decays through the band, then below it
        state, _ = advance(state, True, None, policy, 20.0 + n)
        if policy.flap_low <= state.flap_percent <= policy.flap_high:
            seen_between = True
            assert state.flapping, "between the thresholds it stays flapping"
    assert seen_between and not state.flapping


# --- rollup -----------------------------------------------------------------------------------

UP = restored(CheckStatus.UP, 0.0, CheckPolicy())
DOWN = restored(CheckStatus.DOWN, 0.0, CheckPolicy())
NEW = CheckState()
SOFT_DOWN, _ = advance(NEW, False, "timeout", CheckPolicy(), 1.0)


@pytest.mark.parametrize(
    ("reach", "health", "parent", "maint", "expected"),
    [
        pytest.param(DOWN, {}, DeviceStatus.DOWN, True, DeviceStatus.MAINTENANCE,
                     id="maintenance beats everything"),
        pytest.param(DOWN, {}, DeviceStatus.DOWN, False, DeviceStatus.UNREACHABLE,
                     id="parent down: unreachable, not down"),
        pytest.param(DOWN, {}, DeviceStatus.UNREACHABLE, False, DeviceStatus.UNREACHABLE,
                     id="grandparent down: unreachable"),
        pytest.param(SOFT_DOWN, {}, DeviceStatus.DOWN, False, DeviceStatus.UNREACHABLE,
                     id="new and failing behind a dead parent: unreachable"),
        pytest.param(DOWN, {}, DeviceStatus.UP, False, DeviceStatus.DOWN, id="down"),
        pytest.param(UP, {"toner": DOWN}, DeviceStatus.DOWN, False, DeviceStatus.DEGRADED,
                     id="reachable with a failed health check: degraded"),
        pytest.param(UP, {"toner": UP}, None, False, DeviceStatus.UP, id="up"),
        pytest.param(NEW, {"toner": DOWN}, None, False, DeviceStatus.UNKNOWN,
                     id="unknown until reachability is hard"),
        pytest.param(None, {}, None, False, DeviceStatus.UNKNOWN, id="never polled"),
    ],
)
def test_rollup_precedence(
    reach: CheckState | None,
    health: dict[str, CheckState],
    parent: DeviceStatus | None,
    maint: bool,
    expected: DeviceStatus,
) -> None:
    assert rollup(reach, health, parent, maint)[0] is expected


def test_a_down_switch_in_maintenance_still_cuts_off_its_children() -> None:
    assert path_status(DeviceStatus.MAINTENANCE, DOWN) is DeviceStatus.DOWN
    assert path_status(DeviceStatus.MAINTENANCE, UP) is DeviceStatus.MAINTENANCE


# --- the hall: stories over a small topology ----------------------------------------------------

R = "reachability"


def hall() -> HallState:
    policy = CheckPolicy()
    return HallState([
        DeviceSpec("sw", None, R, {R: policy}),
        DeviceSpec("sw2", "sw", R, {R: policy}),
        DeviceSpec("k1", "sw", R, {R: policy}),
        DeviceSpec("k2", "sw", R, {R: policy}),
        DeviceSpec("k3", "sw2", R, {R: policy}),
        DeviceSpec("printer", "sw", R, {R: policy, "toner": policy}),
        DeviceSpec("line", None, R, {R: QUICK}),
    ])


def play(h: HallState, steps: list[str], start: float = 100.0) -> list[str]:
    """Each step "device[.check] S|F"; output one line per notice-bearing change."""
    out = []
    for n, step in enumerate(steps):
        target, result = step.split()
        device, _, check = target.partition(".")
        u = h.apply(device, check or R, result == "S", None if result == "S" else "timeout",
                    start + n)
        out += [f"{d.device} {d.from_}->{d.to}{' !' if d.notify else ''}" for d in u.devices]
        if u.recheck:
            out.append("recheck " + ",".join(sorted(u.recheck)))
    return out


ALL_UP = ["sw S", "sw2 S", "k1 S", "k2 S", "k3 S", "printer S", "printer.toner S", "line S"]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(["k1 F", "k1 F"], [], id="unknown until the first hard state"),
        pytest.param(["k1 F", "k1 F", "k1 F"], ["k1 unknown->down !"],
                     id="down at start-up pages"),
        pytest.param(ALL_UP[:3] + ["k1 F", "k1 F", "k1 F"], ["k1 up->down !"],
                     id="three failures: one hard DOWN notice"),
        pytest.param(ALL_UP[:3] + ["k1 F", "k1 S", "k1 F", "k1 F"], [],
                     id="a success in between: nothing"),
        pytest.param(ALL_UP[:3] + ["k1 F"] * 3 + ["k1 S", "k1 S"],
                     ["k1 up->down !", "k1 down->up !"], id="two successes after down: one UP"),
        pytest.param(ALL_UP + ["sw F"] * 3 + ["k1 F", "k2 F", "sw2 F"] * 3 + ["k3 F"] * 3,
                     ["sw up->down !", "k1 up->unreachable", "k2 up->unreachable",
                      "sw2 up->unreachable", "k3 up->unreachable"],
                     id="parent down: children unreachable and silent"),
        pytest.param(ALL_UP + ["printer.toner F"] * 3, ["printer up->degraded !"],
                     id="toner low: degraded"),
    ],
)
def test_hall_story(steps: list[str], expected: list[str]) -> None:
    got = play(hall(), steps)
    assert [g for g in got if "unknown->up" not in g] == expected  # initial ups: next test


def test_first_successes_are_up_silently() -> None:
    assert play(hall(), ALL_UP) == [
        "sw unknown->up", "sw2 unknown->up", "k1 unknown->up", "k2 unknown->up",
        "k3 unknown->up", "printer unknown->up", "line unknown->up"]


def outage(h: HallState) -> None:
    play(h, ALL_UP + ["sw F"] * 3 + ["k1 F", "k2 F", "sw2 F"] * 3 + ["k3 F"] * 3)
    assert {d: h.status(d) for d in ("k1", "k2", "sw2", "k3")} == dict.fromkeys(
        ("k1", "k2", "sw2", "k3"), DeviceStatus.UNREACHABLE)


def test_parent_recovers_children_held_until_rechecked() -> None:
    h = hall()
    outage(h)
    got = play(h, ["sw S", "sw S"], start=200)
    # The switch pages its recovery; every child that was cut off is re-checked first, none
    # pages on results taken while the switch was down.
    assert got == ["sw down->up !", "recheck k1,k2,sw2"]
    assert play(h, ["k1 S"], 300) == ["recheck k1"]  # one success: still settling, still held
    assert play(h, ["k1 S"], 301) == ["k1 unreachable->up"]  # settled up: silent
    assert play(h, ["k2 F"], 302) == ["k2 unreachable->down !"]  # really down: pages now
    # The grandchild waits for its own parent, then gets its re-check.
    assert h.status("k3") is DeviceStatus.UNREACHABLE
    assert play(h, ["sw2 S", "sw2 S"], 303) == ["recheck sw2", "sw2 unreachable->up",
                                                 "recheck k3"]
    assert play(h, ["k3 S", "k3 S"], 310) == ["recheck k3", "k3 unreachable->up"]
    assert h.pending == set()


@pytest.mark.parametrize(
    ("switch_then", "expected"),
    [
        pytest.param(["sw F", "sw F"], ["sw up->down !"],
                     id="the switch is really down: the kiosk stays unreachable, silent"),
        pytest.param(["sw S", "k1 S", "k1 S"], ["recheck k1", "recheck k1", "k1 unreachable->up"],
                     id="a glitch, the kiosk answers again: never paged"),
        pytest.param(["sw S", "k1 F"], ["recheck k1", "k1 unreachable->down !"],
                     id="a glitch, the kiosk still fails on its re-check: one DOWN"),
    ],
)
def test_child_failing_before_its_parent_is_hard_down(switch_then: list[str],
                                                      expected: list[str]) -> None:
    # Splay polled the kiosk three times while its switch had failed only once.
    h = hall()
    play(h, ALL_UP)
    assert play(h, ["sw F", "k1 F", "k1 F", "k1 F"], 200) == [
        "k1 up->unreachable", "recheck sw"]  # held, and the path is asked about at once
    assert play(h, switch_then, 300) == expected


def test_flapping_line_one_notice_then_quiet() -> None:
    h = hall()
    notices, started, stopped = [], [], []
    for n, r in enumerate("SF" * 15 + "S" * 25):
        u = h.apply("line", R, r == "S", None if r == "S" else "no reply", float(n))
        notices += [d for d in u.devices if d.notify]
        started += [u.check] if u.check and u.check.flap_started else []
        stopped += [u.check] if u.check and u.check.flap_stopped else []
    assert len(started) == 1 and len(stopped) == 1
    # Before the flapping was detected each flip paged; afterwards none did.
    assert all(d.at < started[0].at for d in notices)
    assert h.status("line") is DeviceStatus.UP


def test_maintenance_tracked_never_paged() -> None:
    h = hall()
    play(h, ALL_UP)
    assert [(d.to, d.notify) for d in h.set_maintenance("printer", True, 200.0)] == [
        (DeviceStatus.MAINTENANCE, False)]
    assert play(h, ["printer F"] * 5 + ["printer.toner F"] * 3, 201) == []
    assert h.checks[("printer", R)].hard is CheckStatus.DOWN  # tracked all the same
    # Leaving maintenance with the device still down is a real problem: it pages.
    assert [(d.to, d.notify) for d in h.set_maintenance("printer", False, 300.0)] == [
        (DeviceStatus.DOWN, True)]


def test_down_switch_in_maintenance_keeps_children_unreachable() -> None:
    h = hall()
    play(h, ALL_UP)
    h.set_maintenance("sw", True, 150.0)
    assert play(h, ["sw F"] * 3 + ["k1 F"] * 3, 200) == ["k1 up->unreachable"]


def test_restore_resumes_without_notices() -> None:
    h = hall()
    h.restore({("k1", R): restored(CheckStatus.DOWN, 50.0, CheckPolicy()),
               ("sw", R): restored(CheckStatus.UP, 50.0, CheckPolicy())}, [], 100.0)
    assert h.status("k1") is DeviceStatus.DOWN and h.since["k1"] == 50.0
    assert play(h, ["k1 F"], 101) == []  # still down: no second "down"


def test_replace_keeps_states_and_drops_removed_devices() -> None:
    h = hall()
    play(h, ALL_UP)
    h.replace([DeviceSpec("sw", None, R, {R: CheckPolicy()}),
               DeviceSpec("k9", "sw", R, {R: CheckPolicy()})], 200.0)
    assert set(h.statuses) == {"sw", "k9"}
    assert h.status("sw") is DeviceStatus.UP and h.status("k9") is DeviceStatus.UNKNOWN
    assert ("k1", R) not in h.checks


def test_cycles_are_rejected() -> None:
    with pytest.raises(ValueError, match="cycle"):
        HallState([DeviceSpec("a", "b"), DeviceSpec("b", "a")])


# --- health checks and outages (issue 10, point 5) ---------------------------------------------


def camera_hall() -> HallState:
    """A camera (ping + a slower RTSP check) behind a switch, as in the shipped hall."""
    return HallState([
        DeviceSpec("sw", None, "ping", {"ping": DEFAULT}),
        DeviceSpec("cam", "sw", "ping", {"ping": DEFAULT, "rtsp": DEFAULT}),
    ])


def feed(h: HallState, steps: list[str], start: float) -> list[str]:
    """Each step "device.check S|F"; one line per device change, with its cause."""
    out = []
    for n, step in enumerate(steps):
        target, result = step.split()
        device, _, check = target.partition(".")
        error = None if result == "S" else ("no reply" if check == "ping" else "refused")
        u = h.apply(device, check, result == "S", error, start + n)
        out += [f"{d.device} {d.from_}->{d.to} ({d.cause})" for d in u.devices]
    return out


CAMERA_UP = ["sw.ping S", "cam.ping S", "cam.rtsp S"]


def test_health_failures_taken_during_an_outage_do_not_outlive_it() -> None:
    h = camera_hall()
    feed(h, CAMERA_UP, 100)
    # The camera loses power: ping fails; the slower RTSP check fails three times meanwhile.
    got = feed(h, ["cam.ping F", "cam.rtsp F", "cam.ping F", "cam.rtsp F", "cam.ping F",
                   "cam.rtsp F"], 200)
    assert got == ["cam up->down (no reply)"]
    # Power back: ping recovers. The camera is UP, never "degraded (rtsp: None)".
    assert feed(h, ["cam.ping S", "cam.ping S"], 300) == ["cam down->up (ok)"]
    assert h.checks[("cam", "rtsp")].hard is CheckStatus.UNKNOWN  # starts afresh
    assert feed(h, ["cam.rtsp S"], 400) == []
    # Afterwards a real RTSP failure of its own still degrades it, with its reason.
    assert feed(h, ["cam.rtsp F"] * 3, 500) == ["cam up->degraded (rtsp: refused)"]


def test_health_failure_before_ping_notices_the_outage_ends_with_it() -> None:
    h = camera_hall()
    feed(h, CAMERA_UP, 100)
    # RTSP noticed first (ping still answering): one failure counts, the rest do not.
    got = feed(h, ["cam.rtsp F", "cam.ping F", "cam.rtsp F", "cam.ping F", "cam.rtsp F",
                   "cam.ping F", "cam.rtsp F"], 200)
    assert got == ["cam up->down (no reply)"]
    assert feed(h, ["cam.ping S", "cam.ping S", "cam.rtsp S"], 300) == ["cam down->up (ok)"]


def test_child_health_failing_while_its_parent_is_down_does_not_degrade_it() -> None:
    h = camera_hall()
    feed(h, CAMERA_UP, 100)
    # The switch dies; the camera's ping has not reached its own threshold yet, but its RTSP
    # connection fails three times: that is the switch's outage, not the camera's.
    got = feed(h, ["sw.ping F", "sw.ping F", "sw.ping F", "cam.rtsp F", "cam.rtsp F",
                   "cam.rtsp F"], 200)
    assert got == ["sw up->down (no reply)"]
    assert h.status("cam") is DeviceStatus.UP
    assert h.checks[("cam", "rtsp")].hard is CheckStatus.UP


def test_no_transition_ever_has_a_none_cause() -> None:
    # A hard-DOWN health check whose latest result is a success (settling) keeps its reason.
    h = camera_hall()
    feed(h, CAMERA_UP, 100)
    assert feed(h, ["cam.rtsp F"] * 3, 200) == ["cam up->degraded (rtsp: refused)"]
    h.apply("cam", "rtsp", True, None, 300)  # one success of two: still degraded
    h.set_maintenance("cam", True, 301)
    back = h.set_maintenance("cam", False, 302)  # a rollup while the last result is a success
    assert [(d.to, d.cause) for d in back] == [(DeviceStatus.DEGRADED, "rtsp: refused")]
    # The same for reachability while it settles.
    feed(h, ["cam.ping F"] * 3, 400)
    h.apply("cam", "ping", True, None, 500)
    assert h.statuses["cam"] == (DeviceStatus.DOWN, "no reply")


def test_restore_keeps_the_recorded_cause_and_since() -> None:
    h = camera_hall()
    h.restore({("cam", "ping"): restored(CheckStatus.DOWN, 50.0, DEFAULT, cause="no reply")},
              [], 100.0)
    assert h.statuses["cam"] == (DeviceStatus.DOWN, "no reply")
    assert h.since["cam"] == 50.0
    h.apply("cam", "ping", True, None, 101)  # settling: the cause stays the device's own
    assert h.statuses["cam"] == (DeviceStatus.DOWN, "no reply")


def test_a_held_trap_condition_outlives_a_ping_outage() -> None:
    """A linkDown trap (held until linkUp) and a failed ping are one outage; when the ping comes
    back while the link is still reported down, the device stays DOWN (seen in the end-to-end
    trap test once health checks started afresh after a recovery)."""
    one = CheckPolicy(failure_threshold=1, success_threshold=1)
    h = HallState([
        DeviceSpec("sw", None, "ping", {"ping": DEFAULT}),
        DeviceSpec("led", "sw", "ping", {"ping": DEFAULT, "traps-down": one},
                   down_checks=frozenset({"traps-down"}), held_checks=frozenset({"traps-down"})),
    ])
    feed(h, ["sw.ping S", "led.ping S"], 100)
    assert feed(h, ["led.traps-down F"], 200) == ["led up->down (traps-down: refused)"]
    feed(h, ["led.ping F"] * 3 + ["led.traps-down F"], 300)  # the trap repeats during the outage
    assert feed(h, ["led.ping S", "led.ping S"], 400) == []  # ping back, link still down
    assert h.status("led") is DeviceStatus.DOWN
    assert feed(h, ["led.traps-down S"], 500) == ["led down->up (ok)"]


def test_repeated_short_outages_count_toward_flapping() -> None:
    """Issue 10: down ~14 s every 40 s, polled every 5 s (3 failures, 5 successes a cycle):
    each outage is a hard DOWN, only ~25% state change. The third hard DOWN inside the window
    starts flapping; it does not stop while the outages go on; it stops once they end."""
    policy = CheckPolicy(failure_threshold=2, success_threshold=2)
    got = story("SSSSS" + "FFFSSSSS" * 6 + "S" * 30, policy)
    assert got[:3] == ["1 unknown->up initial", "7 up->down", "10 down->up"]
    assert got[5] == "23 up->down flapping flap+"
    starts, stops = [g for g in got if "flap+" in g], [g for g in got if "flap-" in g]
    assert len(starts) == 1 and len(stops) == 1
    assert int(stops[0].split()[0]) > 5 + 8 * 6  # only after the last outage
