"""The engine: runs a model and prices what it did (torch only)."""

from .measure import measure

__all__ = ["measure"]
