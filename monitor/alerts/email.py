"""E-mail over SMTP (STARTTLS or none) or SMTPS, with login; smtplib runs in a thread.

``EmailMessage`` with ``policy.SMTP`` encodes Chinese subjects as RFC 2047 words and the body as
UTF-8, with CRLF line ends.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import smtplib
import ssl
from collections.abc import Sequence
from email import policy
from email.message import EmailMessage
from email.utils import formatdate

import httpx

from monitor.alerts.base import DeliveryResult, Message, redact
from monitor.inventory.notifications import EmailChannel as EmailConfig


def build_message(message: Message, sender: str, recipients: Sequence[str]) -> EmailMessage:
    mail = EmailMessage(policy=policy.SMTP)
    mail["Subject"] = message.title
    mail["From"] = sender
    mail["To"] = ", ".join(recipients)
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    # The idempotency key as Message-ID: a re-sent duplicate is recognisably the same mail.
    mail["Message-ID"] = f"<{hashlib.sha256(message.key.encode()).hexdigest()[:32]}@hallmon>"
    mail["X-Hallmon-Key"] = message.key
    # base64 keeps the mail 7-bit clean for relays without 8BITMIME.
    mail.set_content(message.text, cte="base64")
    for a in message.attachments:
        maintype, _, subtype = a["content_type"].partition("/")
        mail.add_attachment(base64.b64decode(a["data"]), maintype=maintype, subtype=subtype,
                            filename=a["filename"])
    return mail


class Email:
    def __init__(self, name: str, config: EmailConfig) -> None:
        self.name = name
        self._config = config

    def __repr__(self) -> str:
        return f"Email({self.name!r}, host={self._config.host!r}, password=<secret>)"

    async def send(self, message: Message, client: httpx.AsyncClient) -> DeliveryResult:
        mail = build_message(message, self._config.sender, self._config.recipients)
        try:
            await asyncio.to_thread(self._send_blocking, mail)
        except smtplib.SMTPAuthenticationError as exc:
            return DeliveryResult.failure(f"SMTP login refused: {exc.smtp_code}", retryable=False)
        except smtplib.SMTPRecipientsRefused:
            return DeliveryResult.failure("SMTP recipients refused", retryable=False)
        except (OSError, smtplib.SMTPException) as exc:
            return DeliveryResult.failure(f"{type(exc).__name__}: {redact(str(exc))}")
        return DeliveryResult.success()

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self._config.ca_file)

    def _send_blocking(self, mail: EmailMessage) -> None:
        cfg = self._config
        smtp: smtplib.SMTP
        if cfg.security == "tls":
            smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=self._tls())
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        with smtp:
            if cfg.security == "starttls":
                smtp.starttls(context=self._tls())
            if cfg.username:
                password = cfg.password.get_secret_value() if cfg.password else ""
                smtp.login(cfg.username, password)
            smtp.send_message(mail)
