"""Function settings from environment variables: one field per variable (``FIELD_NAME`` for
``field_name``), converted by msgspec, required ones and ranges checked at cold start, so a
missing or malformed variable fails the cold start with its name instead of the first request
that needs it.

``DATABASE_URL`` and ``REDIS_URL`` (for the fields ``database_url`` and ``redis_url``) may instead
come from the AWS-style variables of :mod:`cloudex.aws_connect` (a Secrets Manager secret, IAM
authentication to RDS Proxy, a Redis AUTH token secret); plain URLs are used as they are."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TypeVar

import msgspec

__all__ = ["SettingsError", "settings_from_env"]

SettingsT = TypeVar("SettingsT", bound=msgspec.Struct)


class SettingsError(ValueError):
    pass


def settings_from_env(
    cls: type[SettingsT],
    env: Mapping[str, str] | None = None,
    *,
    required: Sequence[str] = (),
    ranges: Sequence[tuple[str, float, float]] = (),
) -> SettingsT:
    """``cls`` from ``env`` (default: the process environment); ``required`` variables must be
    set and non-empty; each ``(field, low, high)`` of ``ranges`` must hold (NaN fails)."""
    env = os.environ if env is None else env
    from cloudex.aws_connect import resolve_env  # it imports SettingsError from here

    names = {field.name for field in msgspec.structs.fields(cls)}
    env = resolve_env(env, database="database_url" in names, redis="redis_url" in names)
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise SettingsError(f"missing environment variables: {', '.join(missing)}")
    raw: dict[str, object] = {}
    for field in msgspec.structs.fields(cls):
        value = env.get(field.name.upper())
        if value is not None and value != "":
            raw[field.name] = value
    try:
        settings = msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {exc}") from exc
    wrong = [
        f"{name.upper()} must be {low}..{high}, got {getattr(settings, name)!r}"
        for name, low, high in ranges
        if not low <= getattr(settings, name) <= high
    ]
    if wrong:
        raise SettingsError("; ".join(wrong))
    return settings
