"""The inventory's ``notifications:`` section: channels (by name) and routes to them.

Secrets (robot webhook URLs carrying tokens, signing secrets, SMTP passwords) arrive here already
resolved from ``${ENV}`` / ``*_file`` references by the inventory loader, as SecretStr.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DingTalkChannel(_Strict):
    type: Literal["dingtalk"]
    webhook: SecretStr
    secret: SecretStr | None = None
    at_mobiles: list[str] = []


class WebhookChannel(_Strict):
    type: Literal["webhook"]
    url: SecretStr


Channel = Annotated[DingTalkChannel | WebhookChannel, Field(discriminator="type")]


class RouteMatch(_Strict):
    classes: list[str] = []
    floors: list[int] = []
    owners: list[str] = []
    devices: list[str] = []


class Route(_Strict):
    name: str
    match: RouteMatch = RouteMatch()
    channels: list[str]


class Notifications(_Strict):
    language: Literal["zh", "en"] = "zh"
    channels: dict[str, Channel] = {}
    routes: list[Route] = []
