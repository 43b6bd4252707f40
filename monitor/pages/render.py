"""Templates, the security headers every page carries, and form bodies.

Content-Security-Policy: only this origin's own script, style and images (monitor/pages/static);
no inline script or style attribute, no frames, no other host. The templates therefore never use
``style=`` or ``on...=`` attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from monitor import __version__
from monitor.pages import i18n
from monitor.store.models import CATEGORY_ZH

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
MAX_FIELDS = 32

env = Environment(
    loader=PackageLoader("monitor.pages", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def page(request: Request, template: str, context: Mapping[str, Any], *,
         status: int = 200, user: Any = None) -> HTMLResponse:
    lang = i18n.pick(request)
    store = getattr(request.app.state, "store", None)
    tz = getattr(getattr(store, "store", store), "tz", UTC)  # the site's (AsyncStore or Store)

    def when(at: datetime, seconds: bool = False) -> str:
        return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

    ctx = {"when": when,
        "request": request, "lang": lang, "t": i18n.translator(lang), "user": user,
        "site": getattr(request.app.state, "site_name", "hallmon"), "version": __version__,
        "status_words": i18n.STATUS_WORDS[lang],
        "ticket_words": i18n.TICKET_STATUS_WORDS[lang],
        "category_words": CATEGORY_ZH if lang == "zh" else {}, **context,
    }
    body = env.get_template(template).render(ctx)
    response = HTMLResponse(body, status_code=status)
    if request.query_params.get("lang") in i18n.LANGS:
        response.set_cookie(i18n.LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax",
                            httponly=True, path="/")
    return secure(response)  # type: ignore[return-value]


def redirect(url: str) -> Response:
    """303 See Other: the browser GETs ``url`` after a POST (no resubmission on reload)."""
    return secure(RedirectResponse(url, status_code=303))


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form body as a dict (the last value wins; bounded field count). The app's
    BodySizeLimit middleware caps the body size before this reads it."""
    raw = await request.body()
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v.replace("\r\n", "\n").replace("\x00", "").strip() for k, v in pairs}
