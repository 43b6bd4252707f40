"""``/docs``: the API's OpenAPI document as a plain page, rendered here from ``app.openapi()``.

FastAPI's own /docs loads Swagger UI from a CDN, blank on the hall's intranet; Swagger UI
vendored would be ~1.5 MB of script that needs ``unsafe-inline`` styles. This page needs no
script at all: every operation with its parameters, request body and responses, then every
schema with its fields; ``/openapi.json`` stays for tools.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from monitor.pages import render

METHODS = ("get", "post", "put", "patch", "delete")


def _type(schema: dict[str, Any]) -> str:
    """A short type name: ``TicketOut``, ``list[string]``, ``integer | null``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " | ".join(_type(s) for s in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list[{_type(schema.get('items', {}))}]"
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    return str(kind)


def _body(op: dict[str, Any]) -> str | None:
    content = op.get("requestBody", {}).get("content", {})
    for media, spec in content.items():
        return f"{media}: {_type(spec.get('schema', {}))}"
    return None


def operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            out.append({
                "method": method.upper(), "path": path, "anchor": f"{method}-{path}",
                "summary": op.get("summary", ""), "description": op.get("description", ""),
                "tag": (op.get("tags") or ["other"])[0],
                "params": [{"name": p["name"], "in": p["in"], "required": p.get("required"),
                            "type": _type(p.get("schema", {})),
                            "description": p.get("description", "")}
                           for p in op.get("parameters", [])],
                "body": _body(op),
                "responses": [(code, r.get("description", ""),
                               next((_type(c.get("schema", {}))
                                     for c in r.get("content", {}).values()), ""))
                              for code, r in op.get("responses", {}).items()],
            })
    return out


def schemas(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, schema in sorted(spec.get("components", {}).get("schemas", {}).items()):
        required = set(schema.get("required", []))
        out.append({"name": name, "fields": [
            (field, _type(s), field in required, s.get("description", ""))
            for field, s in schema.get("properties", {}).items()]})
    return out


async def docs_page(request: Request) -> Response:
    spec = request.app.openapi()
    return render.page(request, "docs.html", {
        "info": spec.get("info", {}), "ops": operations(spec), "schemas": schemas(spec)})
