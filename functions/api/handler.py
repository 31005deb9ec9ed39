"""The API Lambda's entry point (``functions.api.handler.handler``).

The environment is read and checked at cold start (:class:`ApiSettings`), so a misconfigured
function fails at once and says why. Tests and the local gateway build their own handler with
:func:`functions.api.app.make_handler`.
"""

from __future__ import annotations

from functions.api.app import make_handler
from functions.api.settings import ApiSettings

__all__ = ["handler"]

handler = make_handler(ApiSettings.from_env())
