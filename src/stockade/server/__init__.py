"""The Stockade server: the HTTP API over the engine."""

from .app import create_app

__all__ = ["create_app"]
