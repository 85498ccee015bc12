"""Errors as HTTP answers: every known failure becomes a 4xx or 502 with a message.

Every error body has the same shape, ``{"detail": str, "field": str | None, ...}``, with
``row`` and ``column`` added when a dataset cell is at fault, so that a client can point at
what to fix. Known bad input is mapped before it can reach the last-resort handler, which logs
the traceback and answers 500 without internals.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic
import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from market.errors import (
    ChainError,
    CommitmentMismatch,
    InvalidDataset,
    InvalidInput,
    LockNotAcquired,
    MarketError,
    MarketInvalidParams,
    MarketInvalidSample,
    VaultError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer decided by the API itself: ``status``, a message and the field at fault."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


class UploadTooLarge(ApiError):
    """The request body or the uploaded file is over ``Settings.upload_limit_bytes``."""

    def __init__(self, size: int | None, limit: int, what: str = "upload") -> None:
        shown = f"{size} bytes" if size is not None else "more bytes"
        super().__init__(413, f"{what} is {shown}, over the limit of {limit} bytes", "file")
        self.limit = limit


def error_body(detail: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The one shape of every error answer."""
    return {"detail": detail, "field": field, **extra}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


def _field_of(location: tuple[int | str, ...]) -> str:
    # Drop FastAPI's "body"/"query" prefix: the client knows its fields by name.
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_errors(errors: list[Any]) -> dict[str, Any]:
    """A pydantic error list as one message naming every field and its rule."""
    items = [{"field": _field_of(tuple(e["loc"])), "message": str(e["msg"])} for e in errors]
    detail = "; ".join(f"{i['field']}: {i['message']}" for i in items)
    return error_body(detail, items[0]["field"] if items else None, errors=items)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return _json(exc.status, error_body(exc.detail, exc.field), headers)


async def _invalid_input(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInput)
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidDataset):
        extra = {"row": exc.row, "column": exc.column}
    return _json(422, error_body(str(exc), exc.field, **extra))


async def _pydantic_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, pydantic.ValidationError | RequestValidationError)
    return _json(422, validation_errors(list(exc.errors())))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _json(exc.status_code, error_body(str(exc.detail)), dict(exc.headers or {}) or None)


async def _chain_error(_: Request, exc: Exception) -> JSONResponse:
    # A launch parameter the contract refuses is the client's fault, not the chain's.
    if isinstance(exc, MarketInvalidParams):
        return _json(422, error_body(f"the contract refused {exc.field}", exc.field))
    if isinstance(exc, MarketInvalidSample):
        return _json(422, error_body(str(exc), "test_set"))
    log.warning("chain error: %s", exc)
    return _json(502, error_body(f"the chain refused or did not answer: {exc}"))


async def _busy(_: Request, exc: Exception) -> JSONResponse:
    return _json(503, error_body(f"busy, try again: {exc}"), {"Retry-After": "5"})


async def _cache_down(_: Request, exc: Exception) -> JSONResponse:
    log.error("status cache unavailable: %s", exc)
    return _json(503, error_body("the status cache (Redis) is unavailable; try again"))


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    # Missing configuration (factory, operator key, vault key): the operator's to fix.
    log.error("service error: %s", exc)
    return _json(503, error_body(f"the service cannot do this now: {exc}"))


async def _commitment(_: Request, exc: Exception) -> JSONResponse:
    return _json(400, error_body(str(exc)))


async def _last_resort(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return _json(500, error_body("internal error; the operator's log has the details"))


def install_handlers(app: FastAPI) -> None:
    """Map the project's error tree (and the frameworks' errors) to answers."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(pydantic.ValidationError, _pydantic_error)
    app.add_exception_handler(RequestValidationError, _pydantic_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ChainError, _chain_error)
    app.add_exception_handler(LockNotAcquired, _busy)
    app.add_exception_handler(CommitmentMismatch, _commitment)
    app.add_exception_handler(VaultError, _service_error)
    app.add_exception_handler(MarketError, _service_error)
    app.add_exception_handler(redis.RedisError, _cache_down)
    app.add_exception_handler(Exception, _last_resort)
