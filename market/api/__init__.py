"""The HTTP API (``uvicorn market.api:app``); tests build their own with :func:`create_app`."""

from market.api.app import create_app
from market.config import load_settings

app = create_app(load_settings())

__all__ = ["app", "create_app"]
