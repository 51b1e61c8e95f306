"""What ``/openapi.json`` says about errors: one error model, and the statuses each route returns.

Every error the app answers in JSON is ``{"detail": "<what went wrong>"}``; a request that does not
validate (422) adds ``errors``, one ``{"where", "problem"}`` per bad field. FastAPI would document
its own 422 body (``detail`` as an array) for every route with parameters; :func:`install` replaces
that with :class:`ErrorOut`, so a client generated from the document reads the bodies it gets.

Routes declare the statuses they return with :func:`errors`, e.g. ``responses=errors(404)``; the
document also gains 413 on every route that takes a body (the size limit of the app's edge).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

__all__ = ["ERRORS", "ErrorOut", "Problem", "allowed_methods", "errors", "install", "leaf_routes"]


class Problem(BaseModel):
    where: str = Field(description="the field, e.g. `query.limit` or `body.keys.3`")
    problem: str = Field(description="what is wrong with it")


class ErrorOut(BaseModel):
    """Every error answer (4xx, 5xx) in JSON."""

    detail: str = Field(description="what went wrong, in a sentence meant for people")
    errors: list[Problem] | None = Field(default=None, description="with 422: each field that did not validate")


#: What each error status means here.
ERRORS: dict[int, str] = {
    400: "the request cannot be carried out as sent (the detail says why)",
    401: "no valid credentials: a malformed, unknown or revoked API key, or none where one is required",
    403: "the credentials are valid but not for this: the subscription is not active, or the route is not yours",
    404: "nothing with that id or name that you may see",
    409: "the subscriber's current state does not allow this change",
    413: "the request body is too large",
    422: "a parameter or the body does not validate; `errors` lists each problem",
    429: "rate limit or monthly quota exceeded; see Retry-After",
    503: "the database does not answer",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that may answer these error statuses."""
    return {code: {"model": ErrorOut, "description": ERRORS[code]} for code in codes}


_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}


def _document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
        servers=app.servers,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorOut"] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas["ErrorOut"].pop("$defs", None)
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("413", {"description": ERRORS[413]})
            for code, response in responses.items():
                if code[0] in "45" and "HTTPValidationError" in str(response.get("content", "HTTPValidationError")):
                    response["content"] = _ERROR_BODY
                    if int(code) in ERRORS and response.get("description") in {None, "", "Validation Error"}:
                        response["description"] = ERRORS[int(code)]
    return doc


def install(app: FastAPI) -> None:
    """Serve the document with the one error model (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, inside included routers too (FastAPI 0.16x keeps each router as one entry)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from leaf_routes(inner.routes)
        else:
            yield route


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods some route answers at ``path``: the ``Allow`` of a 405, across every route of
    the path (Starlette's own names only the first route that matched it)."""
    methods: set[str] = set()
    for route in leaf_routes(app.router.routes):
        regex, found = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and found and regex.match(path):
            methods |= set(found)
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))
