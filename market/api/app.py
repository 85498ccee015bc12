"""The HTTP API: providers launch markets, everyone reads their status from the cache.

Reads (``GET``) touch Redis only, never the chain: the workers keep the status cache fresh
and every answer says how old it is. Launches (``POST /markets``, bearer token) validate the
whole request before any transaction, then go through :func:`market.launch.launch_market`
with an :class:`~market.orchestrator.Orchestrator` created on the first launch.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import UploadFile
from starlette.types import Message

from market.api.errors import ApiError, UploadTooLarge, install_handlers
from market.api.fastpath import PollFastPath
from market.api.launch_request import (
    LaunchFromPath,
    LaunchParams,
    build_launch,
    resolve_dataset_path,
)
from market.api.schemas import (
    ContributorView,
    ErrorBody,
    Health,
    LaunchAnswer,
    MarketList,
    MarketView,
)
from market.api.views import StatusReader, check_address, market_summary, market_view
from market.chain import FactoryClient, connect
from market.config import Settings
from market.launch import launch_market
from market.orchestrator import Orchestrator
from market.registry import Registry
from market.status import STATUS_PREFIX

OrchestratorFactory = Callable[[Settings], Orchestrator]
# Where JSON launches may name files; a request can never reach outside it.
DEFAULT_DATASET_DIR = Path("var/datasets")
# Room for the multipart boundaries, part headers and form fields around the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024
# The memo in front of Redis lives a tenth of the staleness limit (0.5 s by default): bursts
# of polls on one market cost one Redis read per process and period, and an answer is never
# more than that behind the cache.
MEMO_FRACTION = 0.1
MAX_MEMO_S = 0.5

# auto_error off: a missing token is answered by require_token, in the common error shape.
BEARER = HTTPBearer(auto_error=False, description="MARKET_API_TOKEN")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 415, 422, 502, 503)
}


def _raw_json(value: Any, status: int = 200) -> Response:
    # Skips FastAPI's validation of the answer against a model: the hot poll path is plain
    # data from the cache.
    return Response(
        json.dumps(value, separators=(",", ":")).encode(), status, media_type="application/json"
    )


class _Services:
    """Clients the routes share, each created when first needed."""

    def __init__(self, settings: Settings, factory: OrchestratorFactory) -> None:
        self.settings = settings
        self._factory = factory
        self.cache: redis.Redis = redis.Redis.from_url(settings.redis_url)
        ttl = min(MAX_MEMO_S, settings.status_staleness_s * MEMO_FRACTION)
        self.reader = StatusReader(settings.redis_url, ttl)
        self._orchestrator: Orchestrator | None = None
        self._lock = threading.Lock()
        self.registry: Registry | None = None
        if settings.factory_address is not None:
            # Reads use only the registry's Redis keys; the Web3 object is never called here.
            w3 = connect(settings.rpc_url)
            factory_client = FactoryClient(w3, settings.factory_address)
            self.registry = Registry(self.cache, factory_client, settings.vault_dir)

    def orchestrator(self) -> Orchestrator:
        with self._lock:
            if self._orchestrator is None:
                self._orchestrator = self._factory(self.settings)
            return self._orchestrator

    def market_addresses(self) -> list[str]:
        """Markets of the registry, or every market with a cached status without a factory."""
        if self.registry is not None:
            return sorted(self.registry.markets())
        keys = self.cache.scan_iter(match=STATUS_PREFIX + "*", count=500)
        return sorted(k.decode()[len(STATUS_PREFIX) :] for k in keys)

    def statuses(self, addresses: list[str]) -> list[dict[str, Any] | None]:
        from market.status import status_key

        if not addresses:
            return []
        raws = self.cache.mget([status_key(a) for a in addresses])
        return [None if r is None else dict(json.loads(r)) for r in raws]

    def metadata(self, address: str) -> dict[str, Any] | None:
        return None if self.registry is None else self.registry.metadata(address)


def _limit_body(request: Request, limit: int) -> Request:
    """The request with its body capped at ``limit`` bytes, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(int(declared), limit, "request body")
    receive = request.receive
    seen = 0

    async def counting() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise UploadTooLarge(None, limit, "request body")
        return message

    return Request(request.scope, counting)


def _launch_openapi() -> dict[str, Any]:
    form = LaunchParams.model_json_schema()
    form["properties"] = {"file": {"type": "string", "format": "binary"}, **form["properties"]}
    form["required"] = ["file", *form.get("required", [])]
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": form},
                "application/json": {"schema": LaunchFromPath.model_json_schema()},
            },
        }
    }


def create_app(
    settings: Settings,
    *,
    orchestrator_factory: OrchestratorFactory | None = None,
    dataset_dir: Path | None = None,
) -> FastAPI:
    """The API for ``settings``; ``orchestrator_factory`` builds the launcher on first use."""
    services = _Services(settings, orchestrator_factory or (lambda s: Orchestrator(s)))
    datasets = dataset_dir or DEFAULT_DATASET_DIR
    limit = settings.upload_limit_bytes
    app = FastAPI(
        title="ML data markets",
        version="1",
        summary="Launch prediction markets for training data and poll their rewards.",
    )
    app.state.services = services
    install_handlers(app)
    app.add_middleware(
        PollFastPath, reader=services.reader, staleness_s=settings.status_staleness_s
    )

    def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        """Providers only: the bearer token must equal ``MARKET_API_TOKEN``."""
        expected = settings.api_token
        if expected is None:
            raise ApiError(
                503, "launches are disabled: MARKET_API_TOKEN is not set", "Authorization"
            )
        if credentials is None:
            raise ApiError(
                401,
                "missing token: send 'Authorization: Bearer <MARKET_API_TOKEN>'",
                "Authorization",
            )
        if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
            raise ApiError(403, "the bearer token is wrong", "Authorization")

    @app.get("/health", response_model=Health, responses={503: {"model": ErrorBody}})
    async def health() -> Response:
        """Liveness: the process answers and reaches Redis."""
        try:
            await services.reader.client.ping()
        except redis.RedisError as exc:
            raise ApiError(503, f"Redis does not answer: {exc}") from None
        return _raw_json({"status": "ok", "redis": True})

    @app.get("/markets", response_model=MarketList)
    async def list_markets() -> Response:
        """Every market of the factory, with its cached phase and freshness."""
        addresses = await run_in_threadpool(services.market_addresses)
        statuses = await run_in_threadpool(services.statuses, addresses)
        staleness = settings.status_staleness_s
        rows = [market_summary(a, s, staleness) for a, s in zip(addresses, statuses, strict=True)]
        return _raw_json({"markets": rows})

    @app.get("/markets/{market}", response_model=MarketView, responses=ERRORS)
    async def get_market(market: str) -> Response:
        """Phase, deadlines, counts, progress in %, transactions, last error, metadata."""
        address = check_address(market, "market")
        status = await services.reader.status(address)
        metadata = await run_in_threadpool(services.metadata, address)
        return _raw_json(market_view(status, metadata, settings.status_staleness_s))

    @app.get(
        "/markets/{market}/contributors/{account}", response_model=ContributorView, responses=ERRORS
    )
    async def get_contributor(market: str, account: str) -> Response:
        """A participant's contributions and reward state, from the cache."""
        address = check_address(market, "market")
        who = check_address(account, "account")
        view = await services.reader.contributor(address, who, settings.status_staleness_s)
        return _raw_json(view)

    @app.post(
        "/markets",
        status_code=201,
        response_model=LaunchAnswer,
        responses=ERRORS,
        openapi_extra=_launch_openapi(),
        dependencies=[Depends(require_token)],
    )
    async def launch(request: Request) -> Response:
        """Launch a market from an uploaded test set (multipart) or a server-side file (JSON)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        source: bytes | Path
        if kind == "multipart/form-data":
            params, source, filename = await _from_upload(
                _limit_body(request, limit + FORM_OVERHEAD_BYTES), limit
            )
        elif kind == "application/json":
            params, source, filename = await _from_path(
                _limit_body(request, FORM_OVERHEAD_BYTES), datasets, limit
            )
        else:
            raise ApiError(
                415,
                f"content type {kind or 'none'!r}: send multipart/form-data or application/json",
            )
        spec, feature_spec = await run_in_threadpool(
            build_launch, params, source, filename=filename, max_bytes=limit
        )
        orchestrator = await run_in_threadpool(services.orchestrator)
        result = await run_in_threadpool(launch_market, orchestrator, spec)
        body = {
            "address": result.address,
            "test_root": "0x" + result.test_root.hex(),
            "tx_hash": result.tx_hash,
            "block_number": result.block_number,
            "test_size": len(spec.test_set),
            "dim": spec.dim,
            "max_features": spec.max_features,
            "feature_spec": json.loads(feature_spec.to_json()),
        }
        return JSONResponse(body, 201, headers={"Location": f"/markets/{result.address}"})

    return app


async def _from_upload(request: Request, limit: int) -> tuple[LaunchParams, bytes, str]:
    form = await request.form(max_files=1, max_fields=64)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(422, "the test set is missing: upload it as the form field 'file'", "file")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(None, limit, "the file")
    fields = {k: v for k, v in form.multi_items() if k != "file" and isinstance(v, str)}
    params = LaunchParams.model_validate(fields)
    await form.close()
    return params, data, upload.filename or ""


async def _from_path(request: Request, root: Path, limit: int) -> tuple[LaunchParams, Path, str]:
    body = await request.body()
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", "body") from None
    if not isinstance(document, dict):
        raise ApiError(422, "the body must be a JSON object", "body")
    params = LaunchFromPath.model_validate(document)
    path = resolve_dataset_path(root, params.path)
    size = path.stat().st_size
    if size > limit:
        raise UploadTooLarge(size, limit, f"file {params.path!r}")
    return params, path, path.name


__all__ = ["DEFAULT_DATASET_DIR", "OrchestratorFactory", "create_app"]
