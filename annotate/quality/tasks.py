"""The quality package's tasks, where the worker's task discovery looks for them."""

from .report import refresh_quality

__all__ = ["refresh_quality"]
