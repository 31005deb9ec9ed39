"""cloudex.views: the engine's integers as Backpack JSON, exactly as the wire contract says.

Events and views come from the real engine (``tests.stubs.Exchange``); every expected value is
computed by hand. Units: SOL_USDC tick 0.01, step 0.01 (SOL 9 decimals, USDC 6), so one lot at
one tick is 100 USDC atoms; TATA_INR tick 0.05, step 1 (TATA 0 decimals, INR 2); BTC_USDC tick
0.1, step 0.00001 (BTC 8 decimals). Maker fee 2 bps, taker 5 bps (TATA_INR: 5 and 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import pytest

from cloudex import views
from cloudex.enums import MarketState, OrderStatus, Side, TimeInForce
from cloudex.markets import AssetSpec, MarketRules
from cloudex.messages import (
    BalanceChanged,
    Candle,
    CommandResult,
    DepthChanged,
    MarketStats,
    OrderAccepted,
    OrderClosed,
    OrderView,
    Ticker,
    TradeExecuted,
)
from tests.stubs import START_TS, Exchange

SOL_USDC = "SOL_USDC"
E = TypeVar("E")
T = START_TS  # 2025-11-24T16:00:00 UTC, in µs; the n-th command after seeding runs at T + n ms


def at(n: int) -> int:
    """The time (µs) of the n-th command after the markets were seeded."""
    return T + n * 1_000


def wire(value: Any) -> Any:
    """Check ``value`` holds no float and survives ``msgspec.json``; return it as decoded."""

    def walk(node: Any) -> None:
        assert not isinstance(node, float), node
        if isinstance(node, dict):
            for key, item in node.items():
                assert type(key) is str
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        else:
            assert node is None or isinstance(node, str | int), node

    walk(value)
    decoded = msgspec.json.decode(msgspec.json.encode(value))
    assert decoded == value
    return decoded


def of_type(result: CommandResult, kind: type[E]) -> list[E]:
    return [event for event in result.events if isinstance(event, kind)]


def rules_of(ex: Exchange, market: str) -> MarketRules:
    rules = ex.engine.market_rules(market)
    assert rules is not None
    return rules


@dataclass
class Session:
    """SOL_USDC: an ask (with client id 7), two bids, a crossing bid, a cancel, a tick."""

    ex: Exchange
    rules: MarketRules
    ask: CommandResult  # 3: account 2 asks 1.50 @ 100.50, order 1, client id 7
    bid: CommandResult  # 4: account 1 bids 2.00 @ 100.00, order 2
    low_bid: CommandResult  # 5: account 1 bids 0.02 @ 99.50, order 3
    take: CommandResult  # 6: account 1 bids 1.00 @ 101.00, order 4: fills 1.00 @ 100.50
    cancel: CommandResult  # 7: account 2 cancels order 1 (0.50 left)
    tick: CommandResult  # 8

    @property
    def trade(self) -> TradeExecuted:
        (trade,) = of_type(self.take, TradeExecuted)
        return trade

    @property
    def stats(self) -> MarketStats:
        (stats,) = [s for s in of_type(self.tick, MarketStats) if s.market == SOL_USDC]
        return stats


def session() -> Session:
    ex = Exchange()
    assert ex.deposit(1, "USDC", 10_000 * 10**6).ok  # 1
    assert ex.deposit(2, "SOL", 100 * 10**9).ok  # 2
    ask = ex.limit(2, SOL_USDC, Side.ASK, 10050, 150, client_id=7)  # 3
    bid = ex.limit(1, SOL_USDC, Side.BID, 10000, 200)  # 4
    low_bid = ex.limit(1, SOL_USDC, Side.BID, 9950, 2)  # 5
    take = ex.limit(1, SOL_USDC, Side.BID, 10100, 100)  # 6
    cancel = ex.cancel(2, SOL_USDC, order_id=1)  # 7
    tick = ex.tick()  # 8
    for result in (ask, bid, low_bid, take, cancel, tick):
        assert result.ok, result
    return Session(ex, rules_of(ex, SOL_USDC), ask, bid, low_bid, take, cancel, tick)


@pytest.fixture(scope="module")
def s() -> Session:
    return session()


# -- TIMES AND FORMATS ------------------------------------------------------------------------


def test_iso_ms_is_utc_with_milliseconds_and_no_zone() -> None:
    assert views.iso_ms(T) == "2025-11-24T16:00:00.000"
    assert views.iso_ms(T + 4_999) == "2025-11-24T16:00:00.004"  # truncated, not rounded
    assert views.iso_ms(T + 86_399_999_999) == "2025-11-25T15:59:59.999"


@pytest.mark.parametrize(
    ("scaled", "decimals", "text"),
    [
        (10050, 2, "100.50"),
        (100, 2, "1.00"),
        (99, 2, "0.99"),
        (5, 2, "0.05"),
        (0, 2, "0.00"),
        (0, 0, "0"),
        (7, 0, "7"),
        (500_000, 9, "0.000500000"),
        (-2, 2, "-0.02"),
        (-500, 2, "-5.00"),
        (10**30, 30, "1." + "0" * 30),
    ],
)
def test_amounts_keep_every_decimal_of_their_unit(scaled: int, decimals: int, text: str) -> None:
    assert views._scaled(scaled, decimals) == text


def test_encoded_bytes_keep_key_names_and_strings(s: Session) -> None:
    # Given the book after the trade / When encoded / Then exactly Backpack's depth bytes
    update_id, bids, asks = 4, [(10000, 200), (9950, 2)], [(10050, 50)]
    data = views.depth_json(s.rules, update_id, bids, asks, 1_753_131_712_992_123)
    assert msgspec.json.encode(data) == (
        b'{"asks":[["100.50","0.50"]],"bids":[["99.50","0.02"],["100.00","2.00"]],'
        b'"lastUpdateId":"4","timestamp":1753131712992123}'
    )


# -- PUBLIC REST ------------------------------------------------------------------------------


def test_asset_json_has_symbol_display_name_and_no_tokens() -> None:
    assert wire(views.asset_json(AssetSpec("SOL", 9, "Solana"))) == {
        "symbol": "SOL",
        "displayName": "Solana",
        "coingeckoId": None,
        "tokens": [],
    }
    # No display name: the symbol stands in
    assert wire(views.asset_json(AssetSpec("XYZ", 2)))["displayName"] == "XYZ"


@pytest.mark.parametrize(
    ("market", "price", "quantity"),
    [
        (
            "SOL_USDC",
            {"minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
            {"minQuantity": "0.01", "maxQuantity": "100000.00", "stepSize": "0.01"},
        ),
        (
            "TATA_INR",
            {"minPrice": "0.05", "maxPrice": "100000.00", "tickSize": "0.05"},
            {"minQuantity": "1", "maxQuantity": "1000000", "stepSize": "1"},
        ),
        (
            "BTC_USDC",
            {"minPrice": "0.1", "maxPrice": "10000000.0", "tickSize": "0.1"},
            {"minQuantity": "0.00001", "maxQuantity": "1000.00000", "stepSize": "0.00001"},
        ),
    ],
)
def test_market_json_filters_at_market_precision(
    ex: Exchange, market: str, price: dict[str, str], quantity: dict[str, str]
) -> None:
    # Given a configured market / When shown / Then spot, open, with its filters
    rules = rules_of(ex, market)
    base, quote = market.split("_")
    assert wire(views.market_json(rules)) == {
        "symbol": market,
        "baseSymbol": base,
        "quoteSymbol": quote,
        "marketType": "SPOT",
        "orderBookState": "Open",
        "createdAt": None,
        "filters": {"price": price, "quantity": quantity},
    }


def test_market_json_shows_the_current_state_and_creation_time(ex: Exchange) -> None:
    # Given a market switched to CancelOnly
    assert ex.set_state(SOL_USDC, MarketState.CANCEL_ONLY).ok
    (spec,) = [m for m in ex.engine.markets() if m.symbol == SOL_USDC]
    # When shown with its current state / Then that state, and createdAt as ISO
    data = wire(views.market_json(rules_of(ex, SOL_USDC), spec.state, created_at_us=T))
    assert data["orderBookState"] == "CancelOnly"
    assert data["createdAt"] == "2025-11-24T16:00:00.000"


def test_depth_json_asks_and_bids_ascending_with_id_and_microseconds(s: Session) -> None:
    # Given the engine's book after the trade (update 4), before the cancel
    update_id, bids, asks = 4, [(10000, 200), (9950, 2)], [(10050, 50)]
    (depth,) = of_type(s.take, DepthChanged)
    assert depth.update_id == update_id
    # When shown / Then both sides ascend (bids best last, as Backpack sends them)
    assert wire(views.depth_json(s.rules, update_id, bids, asks, at(6))) == {
        "asks": [["100.50", "0.50"]],
        "bids": [["99.50", "0.02"], ["100.00", "2.00"]],
        "lastUpdateId": "4",
        "timestamp": at(6),
    }
    # And the live book after the cancel, straight from Engine.depth
    assert wire(views.depth_json(s.rules, *s.ex.engine.depth(SOL_USDC), at(8))) == {
        "asks": [],
        "bids": [["99.50", "0.02"], ["100.00", "2.00"]],
        "lastUpdateId": "5",
        "timestamp": at(8),
    }


def test_depth_json_empty_book(ex: Exchange) -> None:
    assert wire(views.depth_json(rules_of(ex, SOL_USDC), *ex.engine.depth(SOL_USDC), T)) == {
        "asks": [],
        "bids": [],
        "lastUpdateId": "0",
        "timestamp": T,
    }


def test_ticker_json_after_one_trade(s: Session) -> None:
    # Given one trade of 1.00 @ 100.50 in the window
    ticker = s.ex.engine.market_stats(SOL_USDC).ticker
    assert ticker == s.stats.ticker
    # Then first = last = high = low, no change, the volumes of the trade
    assert wire(views.ticker_json(s.rules, ticker)) == {
        "symbol": "SOL_USDC",
        "firstPrice": "100.50",
        "lastPrice": "100.50",
        "high": "100.50",
        "low": "100.50",
        "priceChange": "0.00",
        "priceChangePercent": "0.000000",
        "volume": "1.00",
        "quoteVolume": "100.500000",
        "trades": "1",
    }


def test_ticker_json_change_and_percent_from_two_trades(ex: Exchange) -> None:
    # Given trades at 100.00 then 105.50
    rules = rules_of(ex, SOL_USDC)
    assert ex.deposit(1, "USDC", 10_000 * 10**6).ok
    assert ex.deposit(2, "SOL", 100 * 10**9).ok
    for price in (10000, 10550):
        assert ex.limit(2, SOL_USDC, Side.ASK, price, 100).ok
        assert of_type(ex.limit(1, SOL_USDC, Side.BID, price, 100), TradeExecuted)
    # Then change 5.50, percent 5.5 / 100 = 0.055 as a fraction
    data = wire(views.ticker_json(rules, ex.engine.market_stats(SOL_USDC).ticker))
    assert data == {
        "symbol": "SOL_USDC",
        "firstPrice": "100.00",
        "lastPrice": "105.50",
        "high": "105.50",
        "low": "100.00",
        "priceChange": "5.50",
        "priceChangePercent": "0.055000",
        "volume": "2.00",
        "quoteVolume": "205.500000",
        "trades": "2",
    }


@pytest.mark.parametrize(
    ("first", "last", "change", "percent"),
    [
        (9500, 10050, "5.50", "0.057894"),  # the contract's example: 5.5 / 95, truncated
        (9500, 9000, "-5.00", "-0.052631"),  # falling: negative, truncated toward zero
        (3, 1, "-0.02", "-0.666666"),
    ],
)
def test_ticker_json_price_change_percent_is_a_truncated_fraction(
    ex: Exchange, first: int, last: int, change: str, percent: str
) -> None:
    ticker = Ticker(first, last, max(first, last), min(first, last), 1, 100, 1)
    data = wire(views.ticker_json(rules_of(ex, SOL_USDC), ticker))
    assert (data["priceChange"], data["priceChangePercent"]) == (change, percent)


def test_ticker_json_no_trade_yet(ex: Exchange) -> None:
    # Given a market that never traded / Then null prices and zero volumes
    ticker = ex.engine.market_stats(SOL_USDC).ticker
    assert ticker == Ticker(None, None, None, None, 0, 0, 0)
    assert wire(views.ticker_json(rules_of(ex, SOL_USDC), ticker)) == {
        "symbol": "SOL_USDC",
        "firstPrice": None,
        "lastPrice": None,
        "high": None,
        "low": None,
        "priceChange": None,
        "priceChangePercent": None,
        "volume": "0.00",
        "quoteVolume": "0.000000",
        "trades": "0",
    }


def test_public_trade_json_ms_timestamp_and_no_fee(s: Session) -> None:
    assert wire(views.public_trade_json(s.rules, s.trade)) == {
        "id": 1,
        "isBuyerMaker": False,
        "price": "100.50",
        "quantity": "1.00",
        "quoteQuantity": "100.500000",
        "timestamp": at(6) // 1000,
    }


def test_kline_json_start_end_as_utc_text(s: Session) -> None:
    # Given the current candles of the minute of the trade
    candles = {c.interval: c for c in s.ex.engine.market_stats(SOL_USDC).candles}
    # Then the 1m candle spans 16:00 to 16:01
    assert wire(views.kline_json(s.rules, candles["1m"])) == {
        "start": "2025-11-24 16:00:00",
        "end": "2025-11-24 16:01:00",
        "open": "100.50",
        "high": "100.50",
        "low": "100.50",
        "close": "100.50",
        "volume": "1.00",
        "quoteVolume": "100.500000",
        "trades": "1",
    }
    # And calendar intervals end where they should: a week from Monday, at the next month
    week = wire(views.kline_json(s.rules, candles["1w"]))
    assert (week["start"], week["end"]) == ("2025-11-24 00:00:00", "2025-12-01 00:00:00")
    month = wire(views.kline_json(s.rules, candles["1month"]))
    assert (month["start"], month["end"]) == ("2025-11-01 00:00:00", "2025-12-01 00:00:00")


# -- PRIVATE REST -----------------------------------------------------------------------------


def test_balances_json_every_asset_at_its_decimals(s: Session) -> None:
    # Given account 1: 10 000 USDC in, 2.00 @ 100 and 0.02 @ 99.50 resting, bought 1.00 @ 100.50
    assets = {a.symbol: a for a in s.ex.engine.assets()}
    data = wire(views.balances_json(assets, s.ex.engine.balances(1)))
    # Then USDC: 10000 - 200 - 1.99 - 100.5 available, 201.99 locked; SOL: 1 - 0.0005 fee
    assert data == {
        "SOL": {"available": "0.999500000", "locked": "0.000000000", "staked": "0"},
        "USDC": {"available": "9697.510000", "locked": "201.990000", "staked": "0"},
        "BTC": {"available": "0.00000000", "locked": "0.00000000", "staked": "0"},
        "ETH": {"available": "0.00000000", "locked": "0.00000000", "staked": "0"},
        "TATA": {"available": "0", "locked": "0", "staked": "0"},
        "INR": {"available": "0.00", "locked": "0.00", "staked": "0"},
    }
    assert wire(views.balances_json(assets, s.ex.engine.balances(99))) == {}


def resting_ask_json(status: str, executed: str, executed_quote: str) -> dict[str, Any]:
    return {
        "id": "1",
        "clientId": 7,
        "symbol": "SOL_USDC",
        "side": "Ask",
        "orderType": "Limit",
        "timeInForce": "GTC",
        "price": "100.50",
        "quantity": "1.50",
        "quoteQuantity": None,
        "executedQuantity": executed,
        "executedQuoteQuantity": executed_quote,
        "status": status,
        "postOnly": False,
        "reduceOnly": None,
        "selfTradePrevention": "RejectTaker",
        "triggerPrice": None,
        "triggerQuantity": None,
        "createdAt": at(3) // 1000,
    }


def test_order_json_through_the_life_of_an_order(s: Session) -> None:
    # Placed: New, nothing executed, createdAt in ms
    (placed,) = s.ask.orders
    assert wire(views.order_json(s.rules, placed)) == resting_ask_json("New", "0.00", "0.000000")
    # Cancelled after a fill of 1.00: its view and its OrderClosed give the same object
    (cancelled,) = s.cancel.orders
    expected = resting_ask_json("Cancelled", "1.00", "100.500000")
    assert wire(views.order_json(s.rules, cancelled)) == expected
    (closed,) = of_type(s.cancel, OrderClosed)
    assert wire(views.order_json(s.rules, closed)) == expected


def test_order_json_partially_filled_open_order(ex: Exchange) -> None:
    # Given the ask half filled and still open
    assert ex.deposit(1, "USDC", 1_000 * 10**6).ok
    assert ex.deposit(2, "SOL", 10 * 10**9).ok
    assert ex.limit(2, SOL_USDC, Side.ASK, 10050, 150, client_id=7).ok
    assert ex.limit(1, SOL_USDC, Side.BID, 10050, 100).ok
    view = ex.engine.open_order(1)
    assert view is not None
    # Then PartiallyFilled with the executed amounts (createdAt of the 3rd command)
    assert wire(views.order_json(rules_of(ex, SOL_USDC), view)) == resting_ask_json(
        "PartiallyFilled", "1.00", "100.500000"
    )


def test_order_json_market_order_sized_in_quote(ex: Exchange) -> None:
    # Given an ask of 1.50 @ 100.50 and a market buy for 50 USDC
    assert ex.deposit(1, "USDC", 1_000 * 10**6).ok
    assert ex.deposit(2, "SOL", 10 * 10**9).ok
    assert ex.limit(2, SOL_USDC, Side.ASK, 10050, 150).ok
    result = ex.market(1, SOL_USDC, Side.BID, quote_quantity=50 * 10**6)
    # Then 50 // 1.005 = 49 lots for 49.245 USDC, Filled; no price, no quantity
    (view,) = result.orders
    assert wire(views.order_json(rules_of(ex, SOL_USDC), view)) == {
        "id": "2",
        "clientId": None,
        "symbol": "SOL_USDC",
        "side": "Bid",
        "orderType": "Market",
        "timeInForce": "GTC",
        "price": None,
        "quantity": None,
        "quoteQuantity": "50.000000",
        "executedQuantity": "0.49",
        "executedQuoteQuantity": "49.245000",
        "status": "Filled",
        "postOnly": False,
        "reduceOnly": None,
        "selfTradePrevention": "RejectTaker",
        "triggerPrice": None,
        "triggerQuantity": None,
        "createdAt": at(4) // 1000,
    }


def test_fill_json_each_side_pays_its_fee_in_what_it_receives(s: Session) -> None:
    # Buyer (taker, account 1): fee 5 bps of 1.00 SOL = 0.0005 SOL
    assert wire(views.fill_json(s.rules, s.trade, 1)) == {
        "tradeId": 1,
        "orderId": "4",
        "clientId": None,
        "symbol": "SOL_USDC",
        "side": "Bid",
        "price": "100.50",
        "quantity": "1.00",
        "quoteQuantity": "100.500000",
        "fee": "0.000500000",
        "feeSymbol": "SOL",
        "isMaker": False,
        "systemOrderType": None,
        "timestamp": "2025-11-24T16:00:00.006",
    }
    # Seller (maker, account 2, client id 7): fee 2 bps of 100.50 USDC = 0.0201 USDC
    seller = wire(views.fill_json(s.rules, s.trade, 2, client_id=7))
    assert seller == {
        "tradeId": 1,
        "orderId": "1",
        "clientId": 7,
        "symbol": "SOL_USDC",
        "side": "Ask",
        "price": "100.50",
        "quantity": "1.00",
        "quoteQuantity": "100.500000",
        "fee": "0.020100",
        "feeSymbol": "USDC",
        "isMaker": True,
        "systemOrderType": None,
        "timestamp": "2025-11-24T16:00:00.006",
    }
    with pytest.raises(ValueError):
        views.fill_json(s.rules, s.trade, 3)


# -- PRECISION EDGES --------------------------------------------------------------------------


def test_tata_inr_nickel_tick_whole_lots_and_a_zero_decimal_fee(ex: Exchange) -> None:
    # Given TATA_INR (tick 0.05, step 1; TATA 0 decimals, INR 2): 7 asked @ 100.05, 3 bought
    rules = rules_of(ex, "TATA_INR")
    assert ex.deposit(3, "TATA", 1_000).ok
    assert ex.deposit(4, "INR", 100_000).ok  # 1000.00 INR
    assert ex.limit(3, "TATA_INR", Side.ASK, 2001, 7).ok  # 2001 ticks x 0.05 = 100.05
    take = ex.limit(4, "TATA_INR", Side.BID, 2001, 3)
    (trade,) = of_type(take, TradeExecuted)
    # Then 3 x 100.05 = 300.15 INR; buyer fee ceil(3 x 10 bps) = 1 TATA, seller ceil(0.150075)
    assert wire(views.public_trade_json(rules, trade)) == {
        "id": 1,
        "isBuyerMaker": False,
        "price": "100.05",
        "quantity": "3",
        "quoteQuantity": "300.15",
        "timestamp": at(4) // 1000,
    }
    buyer = wire(views.fill_json(rules, trade, 4))
    assert (buyer["fee"], buyer["feeSymbol"]) == ("1", "TATA")
    seller = wire(views.fill_json(rules, trade, 3))
    assert (seller["fee"], seller["feeSymbol"]) == ("0.16", "INR")
    assert wire(views.depth_json(rules, *ex.engine.depth("TATA_INR"), at(4)))["asks"] == [
        ["100.05", "4"]
    ]
    assets = {a.symbol: a for a in ex.engine.assets()}
    balances = wire(views.balances_json(assets, ex.engine.balances(4)))
    assert balances["INR"] == {"available": "699.85", "locked": "0.00", "staked": "0"}
    assert balances["TATA"] == {"available": "2", "locked": "0", "staked": "0"}
    (view,) = take.orders
    order = wire(views.order_json(rules, view))
    assert (order["price"], order["quantity"], order["executedQuoteQuantity"]) == (
        "100.05",
        "3",
        "300.15",
    )


def test_btc_usdc_five_decimal_step_and_eight_decimal_fee(ex: Exchange) -> None:
    # Given BTC_USDC (tick 0.1, step 0.00001; BTC 8 decimals): 0.00123 asked @ 65000.0
    rules = rules_of(ex, "BTC_USDC")
    assert ex.deposit(5, "BTC", 10**8).ok
    assert ex.deposit(6, "USDC", 1_000 * 10**6).ok
    ask = ex.limit(5, "BTC_USDC", Side.ASK, 650_000, 123)
    take = ex.limit(6, "BTC_USDC", Side.BID, 650_000, 100)
    (trade,) = of_type(take, TradeExecuted)
    # Then prices keep one decimal, quantities five, the buyer's fee 5 bps of 0.001 BTC
    (placed,) = ask.orders
    order = wire(views.order_json(rules, placed))
    assert (order["price"], order["quantity"], order["executedQuantity"]) == (
        "65000.0",
        "0.00123",
        "0.00000",
    )
    assert wire(views.ws_trade_json(rules, trade)) == {
        "e": "trade",
        "E": at(4),
        "T": at(4),
        "s": "BTC_USDC",
        "p": "65000.0",
        "q": "0.00100",
        "b": "2",
        "a": "1",
        "t": 1,
        "m": False,
    }
    buyer = wire(views.fill_json(rules, trade, 6))
    assert (buyer["quoteQuantity"], buyer["fee"], buyer["feeSymbol"]) == (
        "65.000000",
        "0.00000050",
        "BTC",
    )
    assert wire(views.fill_json(rules, trade, 5))["fee"] == "0.013000"


# -- WEBSOCKET: PUBLIC ------------------------------------------------------------------------


def test_ws_frame_wraps_data_in_its_stream(s: Session) -> None:
    data = views.ws_trade_json(s.rules, s.trade)
    assert wire(views.ws_frame("trade.SOL_USDC", data)) == {
        "stream": "trade.SOL_USDC",
        "data": data,
    }


def test_ws_depth_absolute_levels_and_removed_levels_as_zero(s: Session) -> None:
    # The trade left 0.50 at 100.50 (update 4)
    (traded,) = of_type(s.take, DepthChanged)
    assert wire(views.ws_depth_event_json(s.rules, traded)) == {
        "e": "depth",
        "E": at(6),
        "T": at(6),
        "s": "SOL_USDC",
        "U": 4,
        "u": 4,
        "b": [],
        "a": [["100.50", "0.50"]],
    }
    # The cancel emptied the level (update 5): quantity "0"
    (cancelled,) = of_type(s.cancel, DepthChanged)
    assert wire(views.ws_depth_event_json(s.rules, cancelled))["a"] == [["100.50", "0"]]
    # Two updates merged into one message cover U..u
    merged = views.ws_depth_json(s.rules, 4, 5, [], cancelled.asks, cancelled.ts)
    assert (merged["U"], merged["u"], merged["a"]) == (4, 5, [["100.50", "0"]])


def test_ws_depth_heartbeat_has_no_levels(ex: Exchange) -> None:
    # Given a quiet book / When a tick comes a second later / Then a sequenced empty update
    ex.ts += 1_000_000
    result = ex.tick()
    (beat,) = [d for d in of_type(result, DepthChanged) if d.market == SOL_USDC]
    assert wire(views.ws_depth_event_json(rules_of(ex, SOL_USDC), beat)) == {
        "e": "depth",
        "E": beat.ts,
        "T": beat.ts,
        "s": "SOL_USDC",
        "U": 1,
        "u": 1,
        "b": [],
        "a": [],
    }


def test_ws_trade_json(s: Session) -> None:
    assert wire(views.ws_trade_json(s.rules, s.trade)) == {
        "e": "trade",
        "E": at(6),
        "T": at(6),
        "s": "SOL_USDC",
        "p": "100.50",
        "q": "1.00",
        "b": "4",
        "a": "1",
        "t": 1,
        "m": False,
    }


def test_ws_ticker_json_from_market_stats(s: Session) -> None:
    assert wire(views.ws_ticker_json(s.rules, s.stats.ticker, s.stats.ts)) == {
        "e": "ticker",
        "E": at(8),
        "s": "SOL_USDC",
        "o": "100.50",
        "c": "100.50",
        "h": "100.50",
        "l": "100.50",
        "v": "1.00",
        "V": "100.500000",
        "n": 1,
    }


def test_ws_ticker_json_no_trade_yet(ex: Exchange) -> None:
    ticker = ex.engine.market_stats(SOL_USDC).ticker
    data = wire(views.ws_ticker_json(rules_of(ex, SOL_USDC), ticker, T))
    assert [data[k] for k in "ochlvVn"] == [None, None, None, None, "0.00", "0.000000", 0]


def test_ws_book_ticker_json_empty_side_is_null(s: Session) -> None:
    # Given the stats after the cancel: best bid 2.00 @ 100.00, no ask
    stats = s.stats
    assert (stats.best_bid, stats.best_ask) == ((10000, 200), None)
    assert wire(views.ws_book_ticker_json(s.rules, stats.best_bid, stats.best_ask, stats.ts)) == {
        "e": "bookTicker",
        "E": at(8),
        "T": at(8),
        "s": "SOL_USDC",
        "a": None,
        "A": None,
        "b": "100.00",
        "B": "2.00",
    }
    # And from Engine.book_ticker, with the book's update id
    bid, ask = s.ex.engine.book_ticker(SOL_USDC)
    data = wire(views.ws_book_ticker_json(s.rules, bid, ask, at(8), update_id=5))
    assert (data["b"], data["B"], data["u"]) == ("100.00", "2.00", 5)


def test_ws_book_ticker_json_both_sides(ex: Exchange) -> None:
    rules = rules_of(ex, "TATA_INR")
    data = wire(views.ws_book_ticker_json(rules, (2000, 3), (2001, 7), T))
    assert [data[k] for k in "aAbB"] == ["100.05", "7", "100.00", "3"]


def test_ws_kline_json_keyed_by_constant_close_time(s: Session) -> None:
    candles = {c.interval: c for c in s.stats.candles}
    assert wire(views.ws_kline_json(s.rules, candles["5m"], s.stats.ts)) == {
        "e": "kline",
        "E": at(8),
        "s": "SOL_USDC",
        "t": "2025-11-24T16:00:00",
        "T": "2025-11-24T16:05:00",
        "o": "100.50",
        "c": "100.50",
        "h": "100.50",
        "l": "100.50",
        "v": "1.00",
        "n": 1,
        "X": False,
    }
    # Closed once its end has come; a month ends at the next month
    five = candles["5m"]
    assert views.ws_kline_json(s.rules, five, five.start + 300_000_000)["X"] is True
    month = wire(views.ws_kline_json(s.rules, candles["1month"], s.stats.ts))
    assert (month["t"], month["T"]) == ("2025-11-01T00:00:00", "2025-12-01T00:00:00")


def test_ws_kline_json_tata_inr_precision() -> None:
    ex = Exchange()
    candle = Candle("1h", T, 2001, 2003, 1999, 2000, 12, 120_030, 4)
    data = wire(views.ws_kline_json(rules_of(ex, "TATA_INR"), candle, T))
    assert [data[k] for k in "ohlcvn"] == ["100.05", "100.15", "99.95", "100.00", "12", 4]
    rest = wire(views.kline_json(rules_of(ex, "TATA_INR"), candle))
    assert (rest["quoteVolume"], rest["trades"]) == ("1200.30", "4")


# -- WEBSOCKET: PRIVATE -----------------------------------------------------------------------


def order_update(event_type: str, ts: int, status: str, z: str, zq: str) -> dict[str, Any]:
    """The ask of the session (order 1, client id 7) as an ``account.orderUpdate`` message."""
    return {
        "e": event_type,
        "E": ts,
        "s": "SOL_USDC",
        "i": "1",
        "S": "Ask",
        "o": "LIMIT",
        "f": "GTC",
        "X": status,
        "z": z,
        "Z": zq,
        "V": "RejectTaker",
        "y": False,
        "r": False,
        "T": ts,
        "O": "USER",
        "c": 7,
        "p": "100.50",
        "q": "1.50",
    }


def test_ws_order_accepted(s: Session) -> None:
    (accepted,) = of_type(s.ask, OrderAccepted)
    expected = order_update("orderAccepted", at(3), "New", "0.00", "0.000000")
    assert wire(views.ws_order_accepted_json(s.rules, accepted)) == expected
    assert views.ws_order_update_json(s.rules, accepted) == expected


def test_ws_order_fill_for_the_maker(s: Session) -> None:
    # Given the maker's view stepped from its OrderAccepted by the trade
    (accepted,) = of_type(s.ask, OrderAccepted)
    view = views.order_view_after_fill(views.order_view_from_accepted(accepted), s.trade)
    (placed,) = s.ask.orders
    assert view == msgspec.structs.replace(
        placed,
        executed_quantity=100,
        executed_quote_quantity=100_500_000,
        status=OrderStatus.PARTIALLY_FILLED,
    )
    # Then an orderFill: cumulative z/Z, this fill's l/L, maker, fee in quote
    expected = order_update("orderFill", at(6), "PartiallyFilled", "1.00", "100.500000")
    expected |= {"l": "1.00", "L": "100.50", "t": 1, "m": True, "n": "0.020100", "N": "USDC"}
    assert wire(views.ws_order_fill_json(s.rules, view, s.trade)) == expected
    assert views.ws_order_update_json(s.rules, s.trade, view) == expected


def test_ws_order_fill_for_the_taker_is_filled_and_its_close_sends_nothing(s: Session) -> None:
    # Given the taker's OrderAccepted and its one fill, in the same command
    (accepted,) = of_type(s.take, OrderAccepted)
    view = views.order_view_after_fill(views.order_view_from_accepted(accepted), s.trade)
    assert view == s.take.orders[0]  # the engine's own view of the result
    assert wire(views.ws_order_fill_json(s.rules, view, s.trade)) == {
        "e": "orderFill",
        "E": at(6),
        "s": "SOL_USDC",
        "i": "4",
        "S": "Bid",
        "o": "LIMIT",
        "f": "GTC",
        "X": "Filled",
        "z": "1.00",
        "Z": "100.500000",
        "V": "RejectTaker",
        "y": False,
        "r": False,
        "T": at(6),
        "O": "USER",
        "p": "101.00",
        "q": "1.00",
        "l": "1.00",
        "L": "100.50",
        "t": 1,
        "m": False,
        "n": "0.000500000",
        "N": "SOL",
    }
    # Its Filled close: the last fill said it all, nothing to send
    (closed,) = of_type(s.take, OrderClosed)
    assert closed.status is OrderStatus.FILLED
    assert views.ws_order_closed_json(s.rules, closed) is None
    assert views.ws_order_update_json(s.rules, closed) is None


def test_ws_order_cancelled(s: Session) -> None:
    (closed,) = of_type(s.cancel, OrderClosed)
    expected = order_update("orderCancelled", at(7), "Cancelled", "1.00", "100.500000")
    assert wire(views.ws_order_closed_json(s.rules, closed)) == expected
    assert views.ws_order_update_json(s.rules, closed) == expected


def test_ws_order_expired_carries_the_reason(ex: Exchange) -> None:
    # Given an IOC bid that finds nothing to take
    assert ex.deposit(1, "USDC", 1_000 * 10**6).ok
    result = ex.limit(1, SOL_USDC, Side.BID, 9000, 5, time_in_force=TimeInForce.IOC)
    (closed,) = of_type(result, OrderClosed)
    # Then orderExpired, reason ImmediateOrCancel, nothing executed
    assert wire(views.ws_order_closed_json(rules_of(ex, SOL_USDC), closed)) == {
        "e": "orderExpired",
        "E": at(2),
        "s": "SOL_USDC",
        "i": "1",
        "S": "Bid",
        "o": "LIMIT",
        "f": "IOC",
        "X": "Expired",
        "z": "0.00",
        "Z": "0.000000",
        "V": "RejectTaker",
        "y": False,
        "r": False,
        "T": at(2),
        "O": "USER",
        "p": "90.00",
        "q": "0.05",
        "R": "ImmediateOrCancel",
    }


def test_ws_order_sized_in_quote_fills_partially_then_closes_filled(ex: Exchange) -> None:
    # Given a market buy for 50 USDC against 1.50 @ 100.50: it buys 0.49 for 49.245
    rules = rules_of(ex, SOL_USDC)
    assert ex.deposit(1, "USDC", 1_000 * 10**6).ok
    assert ex.deposit(2, "SOL", 10 * 10**9).ok
    assert ex.limit(2, SOL_USDC, Side.ASK, 10050, 150).ok
    result = ex.market(1, SOL_USDC, Side.BID, quote_quantity=50 * 10**6)
    (accepted,) = of_type(result, OrderAccepted)
    (trade,) = of_type(result, TradeExecuted)
    (closed,) = of_type(result, OrderClosed)
    # Then its accept shows Q and no p/q
    data = wire(views.ws_order_accepted_json(rules, accepted))
    assert (data["o"], data["Q"], "p" in data, "q" in data) == ("MARKET", "50.000000", False, False)
    # Its fill cannot know it is the last: PartiallyFilled; fee 5 bps of 0.49 SOL
    view = views.order_view_after_fill(views.order_view_from_accepted(accepted), trade)
    fill = wire(views.ws_order_fill_json(rules, view, trade))
    assert [fill[k] for k in ("X", "z", "Z", "l", "L", "n", "N")] == [
        "PartiallyFilled",
        "0.49",
        "49.245000",
        "0.49",
        "100.50",
        "0.000245000",
        "SOL",
    ]
    # So its Filled close is sent, as orderUpdate
    close = wire(views.ws_order_closed_json(rules, closed))
    assert [close[k] for k in ("e", "X", "z", "Z", "Q")] == [
        "orderUpdate",
        "Filled",
        "0.49",
        "49.245000",
        "50.000000",
    ]
    assert "R" not in close


def test_ws_order_update_needs_the_order_for_a_fill(s: Session) -> None:
    with pytest.raises(ValueError):
        views.ws_order_update_json(s.rules, s.trade)
    # And an order that is not in the trade is refused
    (other,) = s.bid.orders
    with pytest.raises(ValueError):
        views.ws_order_fill_json(s.rules, other, s.trade)


def test_ws_balance_update(s: Session) -> None:
    # Given account 1's USDC after its 2.00 @ 100.00 bid locked 200 USDC
    (change,) = [e for e in of_type(s.bid, BalanceChanged) if e.asset == "USDC"]
    assets = {a.symbol: a for a in s.ex.engine.assets()}
    assert wire(views.ws_balance_update_json(assets["USDC"], change)) == {
        "e": "balanceUpdate",
        "E": at(4),
        "a": "USDC",
        "A": "9800.000000",
        "L": "200.000000",
        "S": "0",
    }


# -- EVERY SHAPE ------------------------------------------------------------------------------


def test_every_output_of_a_session_encodes_without_floats(s: Session) -> None:
    """Every function over every event and view of the session: JSON-encodable, no float."""
    ex = s.ex
    assets = {a.symbol: a for a in ex.engine.assets()}
    outputs: list[Any] = [views.asset_json(a) for a in assets.values()]
    outputs += [views.market_json(rules_of(ex, m.symbol), m.state) for m in ex.engine.markets()]
    outputs += [views.balances_json(assets, ex.engine.balances(a)) for a in ex.engine.accounts()]
    open_views: dict[int, OrderView] = {}
    for result in (s.ask, s.bid, s.low_bid, s.take, s.cancel, s.tick):
        outputs += [views.order_json(s.rules, view) for view in result.orders]
        for event in result.events:
            if isinstance(event, OrderAccepted):
                open_views[event.order_id] = views.order_view_from_accepted(event)
                outputs.append(views.ws_order_update_json(s.rules, event))
            elif isinstance(event, TradeExecuted):
                outputs += [
                    views.public_trade_json(s.rules, event),
                    views.ws_trade_json(s.rules, event),
                ]
                outputs += [views.fill_json(s.rules, event, a) for a in (event.buyer, event.seller)]
                for order_id in (event.buy_order_id, event.sell_order_id):
                    view = views.order_view_after_fill(open_views[order_id], event)
                    open_views[order_id] = view
                    outputs.append(views.ws_order_update_json(s.rules, event, view))
            elif isinstance(event, OrderClosed):
                outputs += [
                    views.ws_order_update_json(s.rules, event),
                    views.order_json(s.rules, event),
                ]
            elif isinstance(event, BalanceChanged):
                outputs.append(views.ws_balance_update_json(assets[event.asset], event))
            elif isinstance(event, DepthChanged):
                outputs.append(views.ws_depth_event_json(rules_of(ex, event.market), event))
            elif isinstance(event, MarketStats):
                rules = rules_of(ex, event.market)
                outputs += [
                    views.ticker_json(rules, event.ticker),
                    views.ws_ticker_json(rules, event.ticker, event.ts),
                    views.ws_book_ticker_json(rules, event.best_bid, event.best_ask, event.ts),
                ]
                for candle in event.candles:
                    outputs += [
                        views.kline_json(rules, candle),
                        views.ws_kline_json(rules, candle, event.ts),
                    ]
    for market in ex.engine.markets():
        outputs.append(
            views.depth_json(rules_of(ex, market.symbol), *ex.engine.depth(market.symbol), ex.ts)
        )
    assert len(outputs) > 50
    wire([o for o in outputs if o is not None])
    # The stepped views agree with the engine's own
    for order_id, view in open_views.items():
        live = ex.engine.open_order(order_id)
        if live is not None:
            assert view == live
