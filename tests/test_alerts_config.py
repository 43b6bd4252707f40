"""The ``notifications:`` section: strict, explains itself, keeps secrets secret."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from monitor.inventory.notifications import Notifications

DT = {"type": "dingtalk", "webhook": "https://oapi.dingtalk.com/robot/send?access_token=TOK",
      "secret": "SECdt"}


def _load(**overrides: Any) -> Notifications:
    data: dict[str, Any] = {"channels": {"dt": DT}, "routes": [{"name": "it", "channels": ["dt"]}]}
    return Notifications.model_validate(data | overrides)


def test_defaults_and_durations() -> None:
    route = _load(routes=[{"name": "it", "channels": ["dt"], "group_wait": "45s",
                           "repeat_interval": "4h", "quiet_hours": {"start": "22:00",
                                                                   "end": "07:30"}}]).routes[0]
    assert (route.group_wait, route.repeat_interval) == (45.0, 14400.0)
    assert route.quiet_hours is not None and route.quiet_hours.end.hour == 7
    config = _load()
    assert config.language == "zh" and config.channels["dt"].rate_limit_per_minute == 20
    assert config.delivery.max_attempts == 12


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"routes": [{"name": "it", "channels": ["nope"]}]},
         "routes[0].channels: unknown channel 'nope'"),
        ({"routes": [{"name": "it", "channels": ["dt"]}, {"name": "it", "channels": ["dt"]}]},
         "duplicate route name 'it'"),
        ({"routes": [{"name": "it", "channels": ["dt"], "group_wait": "soon"}]},
         "not a duration: 'soon'"),
        ({"routes": [{"name": "it", "channels": ["dt"],
                      "quiet_hours": {"start": 1320, "end": "07:00"}}]},
         "Input should be a valid time"),
        ({"channels": {"dt": DT | {"colour": "red"}}}, "Extra inputs are not permitted"),
        ({"channels": {"dt": {"type": "pager"}}}, "does not match any of the expected tags"),
        ({"channels": {"m": {"type": "email", "host": "127.0.0.1", "sender": "a@b",
                             "recipients": []}}, "routes": []}, "at least 1 item"),
        ({"channels": {"am": {"type": "alertmanager", "url": "http://127.0.0.1:9093",
                              "resend_interval": "5m"}}, "routes": []},
         "less than or equal to 60"),
    ],
)
def test_each_rule_has_its_message(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _load(**overrides)
    assert message in str(caught.value)


def test_secrets_never_print() -> None:
    config = _load()
    shown = repr(config) + str(config) + config.model_dump_json()
    assert "TOK" not in shown and "SECdt" not in shown
