"""The pure engine core: books, matching, ledger, market data, snapshots. No I/O, no clock."""

from engine_service.core.engine import Engine, EngineConfig

__all__ = ["Engine", "EngineConfig"]
