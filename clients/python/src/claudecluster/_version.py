"""The SDK's version: the API version it speaks (docs/openapi.json's
``info.version``); pyproject.toml reads it from here."""

__version__ = "0.1.0"
