"""OpenAPI 3.1 document generated from msgspec Structs and the route table.

Endpoints declare their contract with :func:`api`; :func:`build_openapi` walks the routes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from starlette.routing import BaseRoute, Route, WebSocketRoute

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__scai_api__"


@dataclass(frozen=True)
class ApiDoc:
    """What an endpoint documents about itself."""

    summary: str
    permission: str | None = None
    body: type | None = None
    response: type | None = None
    status: int = 200
    query: dict[str, str] = field(default_factory=dict)
    public: bool = False
    multipart: bool = False
    tags: tuple[str, ...] = ()


def api(
    summary: str,
    *,
    permission: str | None = None,
    body: type | None = None,
    response: type | None = None,
    status: int = 200,
    query: dict[str, str] | None = None,
    public: bool = False,
    multipart: bool = False,
    tags: Sequence[str] = (),
) -> Callable[[F], F]:
    """Attach an :class:`ApiDoc` to an endpoint function."""

    def mark(func: F) -> F:
        doc = ApiDoc(
            summary,
            permission,
            body,
            response,
            status,
            dict(query or {}),
            public,
            multipart,
            tuple(tags),
        )
        setattr(func, _ATTR, doc)
        return func

    return mark


def doc_of(endpoint: Any) -> ApiDoc | None:
    """The :class:`ApiDoc` of an endpoint, if it has one."""
    doc = getattr(endpoint, _ATTR, None)
    return doc if isinstance(doc, ApiDoc) else None


_ENVELOPE_ERROR = {
    "type": "object",
    "required": ["status", "error", "meta"],
    "properties": {
        "status": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "retry_after": {"type": "integer"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        },
        "meta": {"type": "object", "properties": {"request_id": {"type": "string"}}},
    },
}


def _envelope(ref: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["status", "data", "meta"],
        "properties": {
            "status": {"const": "ok"},
            "data": ref or {"type": "object"},
            "meta": {"type": "object", "properties": {"request_id": {"type": "string"}}},
        },
    }


def build_openapi(title: str, version: str, routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """Build the OpenAPI document for every documented route."""
    documented: list[tuple[str, str, ApiDoc]] = []
    types: list[Any] = []
    for route in routes:
        if isinstance(route, Route | WebSocketRoute):
            doc = doc_of(route.endpoint)
            if doc is None:
                continue
            methods = (
                sorted((route.methods or {"GET"}) - {"HEAD"})
                if isinstance(route, Route)
                else ["get"]
            )
            for method in methods:
                documented.append((route.path, method.lower(), doc))
            types.extend(t for t in (doc.body, doc.response) if t is not None)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for path, method, doc in documented:
        op: dict[str, Any] = {"summary": doc.summary, "tags": list(doc.tags)}
        if doc.permission:
            op["description"] = f"Permission: `{doc.permission}`."
        if doc.public:
            op["security"] = []
        params = [
            {
                "name": n,
                "in": "query",
                "required": False,
                "description": d,
                "schema": {"type": "string"},
            }
            for n, d in doc.query.items()
        ]
        params += [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _path_params(path)
        ]
        if params:
            op["parameters"] = params
        if doc.body is not None:
            media = "multipart/form-data" if doc.multipart else "application/json"
            op["requestBody"] = {"required": True, "content": {media: {"schema": refs[doc.body]}}}
        response_schema = _envelope(refs[doc.response] if doc.response is not None else None)
        op["responses"] = {
            str(doc.status): {
                "description": "success",
                "content": {"application/json": {"schema": response_schema}},
            },
            "default": {
                "description": "error envelope",
                "content": {"application/json": {"schema": _ENVELOPE_ERROR}},
            },
        }
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _path_params(path: str) -> list[str]:
    names = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            names.append(part[1:-1].split(":")[0])
    return names


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} API</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}
code{{background:#f3f3f3;padding:0 .3em}}.op{{border-bottom:1px solid #ddd;padding:.5rem 0}}
.m{{display:inline-block;width:5rem;font-weight:bold;text-transform:uppercase}}</style></head>
<body><h1>{title} API</h1><p>Machine-readable: <a href="{spec_url}">{spec_url}</a></p>
<div id="ops">loading…</div>
<script>
fetch("{spec_url}").then(r => r.json()).then(spec => {{
  const out = document.getElementById("ops"); out.textContent = "";
  for (const [path, ops] of Object.entries(spec.paths)) {{
    for (const [method, op] of Object.entries(ops)) {{
      const div = document.createElement("div"); div.className = "op";
      const m = document.createElement("span"); m.className = "m"; m.textContent = method;
      const p = document.createElement("code"); p.textContent = path;
      const s = document.createElement("div");
      s.textContent = op.summary + " " + (op.description || "");
      div.append(m, p, s); out.append(div);
    }}
  }}
}});
</script></body></html>
"""
