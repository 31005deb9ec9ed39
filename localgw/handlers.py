"""Finding a Lambda handler by name, as the Lambda runtime does with a function's handler
setting (``module.function``; ``module:function`` is accepted too)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["import_handler"]


def import_handler(path: str) -> Callable[[Any, Any], Any]:
    module_name, separator, attribute = path.replace(":", ".").rpartition(".")
    if not separator:
        raise ValueError(f"a handler is module.function (or module:function), not {path!r}")
    handler = getattr(importlib.import_module(module_name), attribute)
    if not callable(handler):
        raise TypeError(f"{path} is not callable")
    return handler  # type: ignore[no-any-return]
