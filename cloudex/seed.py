"""Markets from the config file become engine commands, once.

The engine service seeds on start-up: every configured market the engine does not know yet
becomes an ``AddMarket`` command (journaled like any other). A market the engine already has is
left alone, so editing the file never rewrites history: fees and states change only through
``SetMarketFees`` / ``SetMarketState``.
"""

from __future__ import annotations

from collections.abc import Iterable

from cloudex.markets import MarketsConfig
from cloudex.messages import AddMarket

__all__ = ["market_seed_commands"]


def market_seed_commands(
    config: MarketsConfig, ts: int, existing: Iterable[str] = ()
) -> list[AddMarket]:
    """Return ``AddMarket`` commands for the configured markets not in ``existing``.

    Command ids are ``seed:<symbol>``, so a seed that is delivered twice is applied once.
    """
    known = set(existing)
    return [
        AddMarket(
            id=f"seed:{market.symbol}",
            ts=ts,
            market=market,
            base=config.assets[market.base],
            quote=config.assets[market.quote],
        )
        for market in config.markets
        if market.symbol not in known
    ]
