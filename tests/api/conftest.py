"""Fixtures for the API: the real app over ASGI, on the test Redis and the session anvil."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from market.api import create_app
from market.config import Settings
from market.errors import MarketError
from market.orchestrator import Orchestrator

TOKEN = "provider-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to ``app`` in-process (the whole ASGI stack, no socket)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


class NoLaunches:
    """An orchestrator factory for tests where nothing may reach the chain: it counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, settings: Settings) -> Orchestrator:
        self.calls += 1
        raise MarketError("this test sends no transaction")


@pytest.fixture
def no_launches() -> NoLaunches:
    return NoLaunches()


@pytest.fixture
def make_app(redis_url: str, tmp_path: Path, no_launches: NoLaunches) -> Callable[..., FastAPI]:
    """``make_app(**settings)``: an app on the test Redis whose launches never reach a chain."""

    def build(**overrides: Any) -> FastAPI:
        settings = Settings(
            **{
                "redis_url": redis_url,
                "api_token": TOKEN,
                "vault_dir": tmp_path / "vault",
                **overrides,
            }
        )
        return create_app(
            settings, orchestrator_factory=no_launches, dataset_dir=tmp_path / "datasets"
        )

    return build
