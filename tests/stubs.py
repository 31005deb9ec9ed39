"""Shared builders for engine tests: an engine with the configured markets, and commands with
fresh ids and increasing times."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from cloudex.enums import OrderType, SelfTradePrevention, Side, TimeInForce
from cloudex.markets import MarketsConfig, load_markets_config
from cloudex.messages import (
    AnyCommand,
    CancelAllOrders,
    CancelOrder,
    CommandResult,
    Deposit,
    PlaceOrder,
    SetMarketFees,
    SetMarketState,
    Tick,
    Withdraw,
)
from cloudex.seed import market_seed_commands
from engine_service.core import Engine, EngineConfig

ROOT = Path(__file__).resolve().parents[1]
START_TS = 1_764_000_000_000_000  # µs, 2025-11-24


def markets_config() -> MarketsConfig:
    return load_markets_config(ROOT / "config" / "markets.toml")


class Exchange:
    """An engine plus a command factory: ``ex.limit(1, "SOL_USDC", Side.BID, 10000, 5)``."""

    def __init__(self, config: EngineConfig | None = None, *, markets: bool = True) -> None:
        self.engine = Engine(config)
        self._ids = itertools.count(1)
        self.ts = START_TS
        if markets:
            for command in market_seed_commands(markets_config(), self.ts):
                result = self.execute(command)
                assert result.ok, result

    def command(self, cls: type[AnyCommand], **fields: Any) -> AnyCommand:
        self.ts += 1_000
        fields.setdefault("id", f"cmd-{next(self._ids)}")
        fields.setdefault("ts", self.ts)
        return cls(**fields)

    def execute(self, command: AnyCommand) -> CommandResult:
        return self.engine.execute(command)

    def run(self, cls: type[AnyCommand], **fields: Any) -> CommandResult:
        return self.execute(self.command(cls, **fields))

    def deposit(self, account: int, asset: str, amount: int) -> CommandResult:
        return self.run(Deposit, account=account, asset=asset, amount=amount)

    def withdraw(self, account: int, asset: str, amount: int) -> CommandResult:
        return self.run(Withdraw, account=account, asset=asset, amount=amount)

    def order(
        self, account: int, market: str, side: Side, order_type: OrderType, **fields: Any
    ) -> PlaceOrder:
        """Build (not execute) an order; ``fields`` are the rest of ``PlaceOrder``."""
        command = self.command(
            PlaceOrder, account=account, market=market, side=side, order_type=order_type, **fields
        )
        assert isinstance(command, PlaceOrder)
        return command

    def limit_order(
        self, account: int, market: str, side: Side, price: int, quantity: int, **fields: Any
    ) -> PlaceOrder:
        return self.order(
            account, market, side, OrderType.LIMIT, price=price, quantity=quantity, **fields
        )

    def market_order(
        self,
        account: int,
        market: str,
        side: Side,
        quantity: int | None = None,
        quote_quantity: int | None = None,
        **fields: Any,
    ) -> PlaceOrder:
        return self.order(
            account,
            market,
            side,
            OrderType.MARKET,
            quantity=quantity,
            quote_quantity=quote_quantity,
            **fields,
        )

    def limit(
        self, account: int, market: str, side: Side, price: int, quantity: int, **fields: Any
    ) -> CommandResult:
        return self.execute(self.limit_order(account, market, side, price, quantity, **fields))

    def market(
        self,
        account: int,
        market: str,
        side: Side,
        quantity: int | None = None,
        quote_quantity: int | None = None,
        **fields: Any,
    ) -> CommandResult:
        return self.execute(
            self.market_order(account, market, side, quantity, quote_quantity, **fields)
        )

    def cancel(self, account: int, market: str, **fields: Any) -> CommandResult:
        return self.run(CancelOrder, account=account, market=market, **fields)

    def cancel_all(self, account: int, market: str) -> CommandResult:
        return self.run(CancelAllOrders, account=account, market=market)

    def set_state(self, market: str, state: Any) -> CommandResult:
        return self.run(SetMarketState, market=market, state=state)

    def set_fees(self, market: str, maker: int, taker: int) -> CommandResult:
        return self.run(SetMarketFees, market=market, maker_fee_bps=maker, taker_fee_bps=taker)

    def tick(self) -> CommandResult:
        return self.run(Tick)


__all__ = [
    "Exchange",
    "markets_config",
    "START_TS",
    "OrderType",
    "SelfTradePrevention",
    "Side",
    "TimeInForce",
]
