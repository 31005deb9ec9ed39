"""ccxt's own ``backpack`` class against Cloudex with only its URLs changed (contract §0).

Every call goes through the real client: its request building and signing, its parsers, its
error mapping (contract §3). The tests check what ccxt makes of our answers (exact amounts,
statuses, fees, times), not only that it raises nothing.

One API stack serves the module, so the books are shared: each test uses its own accounts,
cancels what they left open (the ``make_trader`` fixture), and the tests that compare market
data with exact expectations have a market to themselves:

* ``ETH_USDC``: public market data (trades, tickers, candles);
* ``BTC_USDC``: the order book;
* ``SOL_USDC``: orders, fills and balances (books cleared between tests);
* ``TATA_INR``: a second market for the "every market" reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import ROUND_CEILING, Decimal
from typing import Any, TypeVar

import ccxt
import pytest

from cloudex import signing
from tests.integration.api_support import Trader

T = TypeVar("T")

SOL = "SOL/USDC"
BTC = "BTC/USDC"
ETH = "ETH/USDC"
TATA = "TATA/INR"
ALL_SYMBOLS = {SOL, BTC, ETH, TATA}


# -- HELPERS ----------------------------------------------------------------------------------


def D(value: Any) -> Decimal:
    """A ccxt number (a float parsed from our decimal string) as the exact decimal it was."""
    assert value is not None
    return Decimal(str(value))


def eventually(check: Callable[[], T], timeout_s: float = 15.0, interval_s: float = 0.1) -> T:
    """``check()``'s result once it stops failing its assertions; the last failure after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval_s)


def connect(api_stack: Any, trader: Trader | None = None) -> Any:
    """ccxt's backpack class on our gateway, markets loaded. ccxt's own throttle (20 req/s) is
    off: the server enforces its limits itself. The last parsed answer is kept."""
    exchange = api_stack.ccxt(trader)
    exchange.enableRateLimit = False
    exchange.enableLastJsonResponse = True  # to compare the parsed result with the wire
    exchange.load_markets()
    return exchange


@pytest.fixture
def make_trader(api_stack: Any) -> Iterator[Callable[[dict[str, str]], Trader]]:
    """A fresh funded account per call; whatever its orders left open is cancelled after the
    test, so the next test finds the books as they were."""
    made: list[Trader] = []

    def make(funds: dict[str, str]) -> Trader:
        trader: Trader = api_stack.new_trader(funds)
        made.append(trader)
        return trader

    yield make
    for trader in made:
        opened = api_stack.signed(trader, "GET", "/api/v1/orders")
        assert opened.status_code == 200, opened.text
        for symbol in sorted({order["symbol"] for order in opened.json()}):
            cancelled = api_stack.signed(trader, "DELETE", "/api/v1/orders", {"symbol": symbol})
            assert cancelled.status_code == 200, cancelled.text


def fee(amount: Decimal, bps: int, decimals: int) -> Decimal:
    """A fee as the engine charges it: ``bps`` of ``amount``, rounded up to the asset's atom."""
    atom = Decimal(1).scaleb(-decimals)
    return (amount * bps / 10_000).quantize(atom, rounding=ROUND_CEILING)


# -- MARKETS AND SYSTEM -----------------------------------------------------------------------


def test_load_markets_and_currencies(api_stack: Any) -> None:
    exchange = connect(api_stack)
    markets = exchange.markets
    assert set(markets) == ALL_SYMBOLS
    sol = markets[SOL]
    assert (sol["id"], sol["base"], sol["quote"], sol["baseId"], sol["quoteId"]) == (
        "SOL_USDC",
        "SOL",
        "USDC",
        "SOL",
        "USDC",
    )
    assert sol["type"] == "spot" and sol["spot"] is True and sol["swap"] is False
    assert sol["active"] is True
    # TICK_SIZE precision mode: the precision is the increment itself.
    assert (D(sol["precision"]["price"]), D(sol["precision"]["amount"])) == (
        Decimal("0.01"),
        Decimal("0.01"),
    )
    assert D(sol["limits"]["amount"]["min"]) == Decimal("0.01")
    assert D(sol["limits"]["amount"]["max"]) == Decimal("100000")
    assert D(sol["limits"]["price"]["min"]) == Decimal("0.01")
    assert D(sol["limits"]["price"]["max"]) == Decimal("1000000")
    expected = {
        BTC: ("0.1", "0.00001", "0.00001", "1000"),
        ETH: ("0.01", "0.0001", "0.0001", "10000"),
        TATA: ("0.05", "1", "1", "1000000"),
    }
    for symbol, (tick, step, min_qty, max_qty) in expected.items():
        market = markets[symbol]
        assert market["active"] is True and market["spot"] is True, symbol
        assert D(market["precision"]["price"]) == Decimal(tick), symbol
        assert D(market["precision"]["amount"]) == Decimal(step), symbol
        assert D(market["limits"]["amount"]["min"]) == Decimal(min_qty), symbol
        assert D(market["limits"]["amount"]["max"]) == Decimal(max_qty), symbol
        assert market["id"] == symbol.replace("/", "_")
    # ccxt rounds prices to the tick and truncates amounts to the step with these.
    assert exchange.price_to_precision(BTC, 50000.06) == "50000.1"
    assert exchange.amount_to_precision(BTC, 0.123456789) == "0.12345"
    assert exchange.price_to_precision(TATA, 5.07) == "5.05"

    currencies = exchange.fetch_currencies()
    assert set(currencies) == {"SOL", "USDC", "BTC", "ETH", "TATA", "INR"}
    assert currencies["SOL"]["name"] == "Solana"
    assert currencies["USDC"]["name"] == "USD Coin"
    assert currencies["INR"]["id"] == "INR" and currencies["INR"]["code"] == "INR"
    # No blockchains: ccxt marks deposits and withdrawals off (contract §4.2).
    assert currencies["BTC"]["deposit"] is False and currencies["BTC"]["withdraw"] is False
    assert exchange.currencies["ETH"]["name"] == "Ethereum"


def test_time_and_status(api_stack: Any) -> None:
    exchange = connect(api_stack)
    assert exchange.fetch_status()["status"] == "ok"
    before = int(time.time() * 1000)
    raw = exchange.publicGetApiV1Time()  # a bare number, as Backpack sends it
    after = int(time.time() * 1000)
    assert before - 1_000 <= int(raw) <= after + 1_000
    # ccxt indexes the unparsed body's first character (contract §4.5): its known bug.
    assert exchange.fetch_time() == 1


# -- PUBLIC MARKET DATA -----------------------------------------------------------------------


def test_order_book(api_stack: Any, make_trader: Callable[[dict[str, str]], Trader]) -> None:
    maker = make_trader({"USDC": "200000", "BTC": "2"})
    exchange = connect(api_stack, maker)
    public = connect(api_stack)
    empty = public.fetch_order_book(BTC)
    assert empty["bids"] == [] and empty["asks"] == []
    for side, amount, price in [
        ("buy", 0.5, 50000.0),
        ("buy", 0.3, 49999.9),
        ("buy", 1.0, 49000.0),
        ("buy", 0.25, 49999.9),  # same level: 0.55 in all
        ("sell", 0.2, 51000.0),
        ("sell", 0.1, 51000.0),  # same level: 0.3
        ("sell", 0.25, 52000.5),
    ]:
        placed = exchange.create_order(BTC, "limit", side, amount, price)
        assert placed["status"] == "open"

    book = public.fetch_order_book(BTC)
    assert book["symbol"] == BTC
    # ccxt sorts bids descending and asks ascending; levels aggregate orders.
    assert [[D(p), D(q)] for p, q in book["bids"]] == [
        [Decimal("50000"), Decimal("0.5")],
        [Decimal("49999.9"), Decimal("0.55")],
        [Decimal("49000"), Decimal("1")],
    ]
    assert [[D(p), D(q)] for p, q in book["asks"]] == [
        [Decimal("51000"), Decimal("0.3")],
        [Decimal("52000.5"), Decimal("0.25")],
    ]
    # The nonce is lastUpdateId (WebSocket sync), the timestamp µs -> ms.
    raw = public.last_json_response
    assert raw["bids"][-1] == ["50000.0", "0.50000"]  # the wire: strings at tick and step
    assert book["nonce"] == int(raw["lastUpdateId"]) > 0
    assert raw["timestamp"] > 10**15  # µs
    assert book["timestamp"] == raw["timestamp"] // 1000
    assert abs(book["timestamp"] - time.time() * 1000) < 60_000
    assert book["datetime"] == public.iso8601(book["timestamp"])

    # limit: ccxt asks for the next allowed depth (5) and trims to what was asked.
    top = public.fetch_order_book(BTC, 2)
    assert "limit=5" in public.last_request_url
    assert [D(p) for p, _ in top["bids"]] == [Decimal("50000"), Decimal("49999.9")]
    assert [D(p) for p, _ in top["asks"]] == [Decimal("51000"), Decimal("52000.5")]
    best = public.fetch_order_book(BTC, 1)
    assert [[D(p), D(q)] for p, q in best["bids"]] == [[Decimal("50000"), Decimal("0.5")]]
    assert [[D(p), D(q)] for p, q in best["asks"]] == [[Decimal("51000"), Decimal("0.3")]]

    # A change moves the nonce on.
    exchange.cancel_all_orders(BTC)
    after = public.fetch_order_book(BTC)
    assert after["bids"] == [] and after["asks"] == []
    assert after["nonce"] > book["nonce"]


def test_trades_tickers_and_candles(
    api_stack: Any, make_trader: Callable[[dict[str, str]], Trader]
) -> None:
    """Three trades on ETH_USDC, then every public view of them."""
    alice = make_trader({"ETH": "2", "USDC": "10000"})
    bob = make_trader({"USDC": "10000"})
    a = connect(api_stack, alice)
    b = connect(api_stack, bob)
    public = connect(api_stack)
    start_ms = int(time.time() * 1000)

    a.create_order(ETH, "limit", "sell", 0.5, 3000.00)
    a.create_order(ETH, "limit", "sell", 0.3, 3001.50)
    bought = b.create_order(ETH, "market", "buy", 0.6)  # 0.5 @ 3000, 0.1 @ 3001.50
    assert bought["status"] == "closed" and D(bought["filled"]) == Decimal("0.6")
    b.create_order(ETH, "limit", "buy", 0.2, 2990.00)
    sold = a.create_order(ETH, "limit", "sell", 0.2, 2990.00)  # takes bob's bid
    assert sold["status"] == "closed"
    end_ms = int(time.time() * 1000)

    # -- fetch_trades: newest first on the wire, ccxt sorts by time ------------------------
    trades = sorted(public.fetch_trades(ETH), key=lambda t: int(t["id"]))
    assert [(D(t["price"]), D(t["amount"]), t["side"], D(t["cost"])) for t in trades] == [
        (Decimal("3000"), Decimal("0.5"), "buy", Decimal("1500")),
        (Decimal("3001.5"), Decimal("0.1"), "buy", Decimal("300.15")),
        (Decimal("2990"), Decimal("0.2"), "sell", Decimal("598")),  # buyer was the maker
    ]
    for trade in trades:
        assert trade["symbol"] == ETH and trade["takerOrMaker"] == "taker"
        assert isinstance(trade["timestamp"], int)
        assert start_ms - 1_000 <= trade["timestamp"] <= end_ms + 1_000  # ms, not µs
        assert trade["datetime"] == public.iso8601(trade["timestamp"])
        assert trade["fee"]["cost"] is None  # public trades carry no fee
    assert trades[0]["timestamp"] == trades[1]["timestamp"]  # one command
    assert trades[2]["info"]["isBuyerMaker"] is True
    assert trades[0]["info"]["price"] == "3000.00" and trades[0]["info"]["quantity"] == "0.5000"
    newest = public.fetch_trades(ETH, limit=2)
    assert "limit=2" in public.last_request_url
    assert sorted(t["id"] for t in newest) == sorted(t["id"] for t in trades[1:])
    since = public.fetch_trades(ETH, since=trades[2]["timestamp"])
    assert [t["id"] for t in since] == [trades[2]["id"]]

    # -- fetch_ticker / fetch_tickers: the engine publishes stats on its next tick ---------
    def ticker_ready() -> Any:
        ticker = public.fetch_ticker(ETH)
        assert ticker["info"]["trades"] == "3", ticker["info"]
        return ticker

    ticker = eventually(ticker_ready)
    assert ticker["symbol"] == ETH
    assert D(ticker["open"]) == Decimal("3000")
    assert D(ticker["last"]) == D(ticker["close"]) == Decimal("2990")
    assert D(ticker["high"]) == Decimal("3001.5")
    assert D(ticker["low"]) == Decimal("2990")
    assert D(ticker["baseVolume"]) == Decimal("0.8")
    assert D(ticker["quoteVolume"]) == Decimal("2398.15")
    assert D(ticker["change"]) == Decimal("-10")
    assert ticker["info"]["priceChangePercent"] == "-0.003333"  # a fraction: ccxt x100
    assert D(ticker["percentage"]) == Decimal("-0.3333")
    tickers = public.fetch_tickers()
    assert set(tickers) == ALL_SYMBOLS
    assert tickers[ETH]["info"] == ticker["info"]
    assert D(tickers[ETH]["last"]) == Decimal("2990")
    assert tickers[TATA]["last"] is None and D(tickers[TATA]["baseVolume"]) == 0
    only = public.fetch_tickers([ETH])
    assert set(only) == {ETH} and D(only[ETH]["high"]) == Decimal("3001.5")

    # -- fetch_ohlcv: 1m candles from the persister's read model (poll until projected) ----
    expected: dict[int, list[Decimal]] = {}  # minute start (ms) -> o, h, l, c, v
    for trade in trades:
        minute = trade["timestamp"] // 60_000 * 60_000
        price, amount = D(trade["price"]), D(trade["amount"])
        candle = expected.setdefault(minute, [price, price, price, price, Decimal(0)])
        candle[1], candle[2] = max(candle[1], price), min(candle[2], price)
        candle[3] = price
        candle[4] += amount

    def as_expected(candles: list[list[Any]]) -> list[tuple[int, list[Decimal]]]:
        return [(c[0], [D(x) for x in c[1:]]) for c in candles]

    def candles_ready() -> list[list[Any]]:
        candles = public.fetch_ohlcv(ETH, "1m")
        assert as_expected(candles) == sorted(expected.items()), candles
        return candles

    candles = eventually(candles_ready)
    assert "interval=1m" in public.last_request_url
    first_minute = min(expected)
    # since/limit: startTime in seconds, ccxt keeps candles >= since, the first ``limit``.
    one = public.fetch_ohlcv(ETH, "1m", since=first_minute, limit=1)
    assert f"startTime={first_minute // 1000}" in public.last_request_url
    assert as_expected(one) == [(first_minute, expected[first_minute])]
    assert one[0] == candles[0]
    later = public.fetch_ohlcv(ETH, "1m", since=max(expected) + 60_000)
    assert later == []
    # Longer intervals hold the same three trades (unless they straddle a boundary); ccxt
    # sends 1M as "1month".
    whole = [Decimal("3000"), Decimal("3001.5"), Decimal("2990"), Decimal("2990"), Decimal("0.8")]
    first, last = trades[0]["timestamp"], trades[-1]["timestamp"]
    for timeframe in ["1h", "1d", "1M"]:
        candles = public.fetch_ohlcv(ETH, timeframe, limit=2)
        if timeframe == "1M":
            assert "interval=1month" in public.last_request_url
        start = public.parse8601(public.iso8601(first)[:7] + "-01T00:00:00Z")
        if timeframe != "1M":
            seconds = public.parse_timeframe(timeframe) * 1000
            start = first // seconds * seconds
            if last // seconds * seconds != start:
                continue
        elif public.iso8601(last)[:7] != public.iso8601(first)[:7]:
            continue
        assert [(c[0], [D(x) for x in c[1:]]) for c in candles] == [(start, whole)], timeframe

    # Trades history (offset): the persister's copy, the same as the engine's recent list.
    history = sorted(public.fetch_trades(ETH, params={"offset": 0}), key=lambda t: int(t["id"]))
    assert "/api/v1/trades/history" in public.last_request_url
    assert [t["info"] for t in history] == [t["info"] for t in trades]
    assert public.fetch_trades(ETH, params={"offset": 3}) == []


# -- BALANCES ---------------------------------------------------------------------------------


def test_balance_after_deposits_orders_and_fills(
    api_stack: Any, make_trader: Callable[[dict[str, str]], Trader]
) -> None:
    """SOL_USDC: maker fee 2 bps, taker 5 bps; the buyer pays in SOL, the seller in USDC."""
    seller = make_trader({"SOL": "10"})
    buyer = make_trader({"USDC": "1000"})
    s = connect(api_stack, seller)
    b = connect(api_stack, buyer)

    balance = b.fetch_balance()
    assert balance["USDC"] == {"free": 1000.0, "used": 0.0, "total": 1000.0}
    assert "info" not in balance  # ccxt's backpack parser drops the raw answer
    assert b.privateGetApiV1Capital()["USDC"] == {
        "available": "1000.000000",
        "locked": "0.000000",
        "staked": "0",
    }

    ask = s.create_order(SOL, "limit", "sell", 2, 100.01)
    balance = s.fetch_balance()
    assert (D(balance["SOL"]["free"]), D(balance["SOL"]["used"])) == (Decimal(8), Decimal(2))

    # 1.37 SOL @ 100.01 (the maker's price; the buyer's limit was higher: nothing stays locked)
    bid = b.create_order(SOL, "limit", "buy", 1.37, 100.50)
    assert bid["status"] == "closed"
    notional = Decimal("1.37") * Decimal("100.01")  # 137.0137
    buyer_fee = fee(Decimal("1.37"), 5, 9)  # 0.000685 SOL
    seller_fee = fee(notional, 2, 6)  # 0.02740274 -> 0.027403 USDC, rounded up
    assert seller_fee == Decimal("0.027403")
    b.create_order(SOL, "limit", "buy", 1, 90)  # rests: 90 USDC locked

    balance = b.fetch_balance()
    raw = b.privateGetApiV1Capital()
    assert raw["SOL"]["available"] == str(Decimal("1.37") - buyer_fee)  # at SOL's 9 decimals
    assert (D(balance["SOL"]["free"]), D(balance["SOL"]["used"])) == (Decimal("1.369315"), 0)
    assert D(balance["SOL"]["total"]) == Decimal("1.369315")
    usdc = balance["USDC"]
    assert (D(usdc["free"]), D(usdc["used"]), D(usdc["total"])) == (
        Decimal(1000) - notional - 90,
        Decimal(90),
        Decimal(1000) - notional,
    )
    assert balance["free"]["USDC"] == usdc["free"] and balance["total"]["SOL"] == 1.369315

    balance = s.fetch_balance()
    assert (D(balance["SOL"]["free"]), D(balance["SOL"]["used"])) == (
        Decimal(8),
        Decimal("0.63"),
    )
    assert D(balance["USDC"]["free"]) == notional - seller_fee == Decimal("136.986297")
    assert D(balance["USDC"]["used"]) == 0
    assert s.privateGetApiV1Capital()["USDC"]["available"] == "136.986297"

    # The fills say the same, fee by fee.
    (bought,) = b.fetch_my_trades(SOL)
    assert (bought["side"], bought["takerOrMaker"], bought["order"]) == ("buy", "taker", bid["id"])
    assert bought["fee"]["currency"] == "SOL" and D(bought["fee"]["cost"]) == buyer_fee
    (sold,) = s.fetch_my_trades(SOL)
    assert (sold["side"], sold["takerOrMaker"], sold["order"]) == ("sell", "maker", ask["id"])
    assert sold["fee"]["currency"] == "USDC" and D(sold["fee"]["cost"]) == seller_fee
    assert sold["id"] == bought["id"] and D(sold["cost"]) == notional

    # Cancelling unlocks exactly what was locked.
    s.cancel_all_orders(SOL)
    assert s.fetch_balance()["SOL"] == {"free": 8.63, "used": 0.0, "total": 8.63}


# -- ORDERS -----------------------------------------------------------------------------------


def test_limit_order_lifecycle(
    api_stack: Any, make_trader: Callable[[dict[str, str]], Trader]
) -> None:
    trader = make_trader({"USDC": "1000", "INR": "1000"})
    exchange = connect(api_stack, trader)
    before = exchange.milliseconds()
    # ccxt rounds the price to the tick and truncates the amount to the step.
    order = exchange.create_order(SOL, "limit", "buy", 1.259, 99.504, {"clientOrderId": 42})
    assert exchange.last_request_body == (
        '{"clientId":42,"orderType":"Limit","price":"99.5","quantity":"1.25",'
        '"side":"Bid","symbol":"SOL_USDC"}'
    )
    assert order["id"].isdigit()
    assert order["clientOrderId"] == "42"
    assert (order["symbol"], order["type"], order["side"]) == (SOL, "limit", "buy")
    assert (order["status"], order["timeInForce"], order["postOnly"]) == ("open", "GTC", False)
    assert (D(order["price"]), D(order["amount"])) == (Decimal("99.5"), Decimal("1.25"))
    assert (D(order["filled"]), D(order["remaining"]), D(order["cost"])) == (0, Decimal("1.25"), 0)
    assert before - 1_000 <= order["timestamp"] <= exchange.milliseconds() + 1_000
    assert order["info"]["price"] == "99.50"

    other = exchange.create_order(TATA, "limit", "buy", 10, 5.05)
    assert other["status"] == "open" and D(other["price"]) == Decimal("5.05")

    (listed,) = exchange.fetch_open_orders(SOL)
    assert (listed["id"], listed["clientOrderId"], listed["status"]) == (order["id"], "42", "open")
    assert listed["timestamp"] == order["timestamp"]
    every = exchange.fetch_open_orders()
    assert {(o["id"], o["symbol"]) for o in every} == {(order["id"], SOL), (other["id"], TATA)}

    fetched = exchange.fetch_order(order["id"], SOL)
    assert (fetched["id"], fetched["status"], fetched["clientOrderId"]) == (
        order["id"],
        "open",
        "42",
    )
    assert D(fetched["amount"]) == Decimal("1.25")
    direct = exchange.fetch_open_order(order["id"], SOL)  # GET /api/v1/order
    assert "/api/v1/order?" in exchange.last_request_url
    assert direct["info"] == fetched["info"] == listed["info"]

    # Another account can neither see nor cancel it.
    intruder = connect(api_stack, make_trader({"USDC": "1"}))
    with pytest.raises(ccxt.ExchangeNotAvailable):
        intruder.fetch_order(order["id"], SOL)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        intruder.cancel_order(order["id"], SOL)
    assert intruder.fetch_orders(SOL) == [] and intruder.fetch_open_orders() == []

    cancelled = exchange.cancel_order(order["id"], SOL)
    assert (cancelled["id"], cancelled["status"]) == (order["id"], "canceled")
    assert cancelled["info"]["status"] == "Cancelled"
    assert D(cancelled["filled"]) == 0 and cancelled["clientOrderId"] == "42"
    assert exchange.fetch_order(order["id"], SOL)["status"] == "canceled"
    assert exchange.fetch_open_orders(SOL) == []
    assert [o["id"] for o in exchange.fetch_open_orders()] == [other["id"]]
    assert exchange.fetch_balance()["USDC"] == {"free": 1000.0, "used": 0.0, "total": 1000.0}

    # History: open and closed orders of the market.
    history = exchange.fetch_orders(SOL)
    assert [(o["id"], o["status"]) for o in history] == [(order["id"], "canceled")]
    assert {o["id"]: o["status"] for o in exchange.fetch_orders()} == {
        order["id"]: "canceled",
        other["id"]: "open",
    }

    # An unknown or already closed order: RESOURCE_NOT_FOUND, ExchangeNotAvailable in ccxt.
    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.cancel_order("999999999", SOL)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.cancel_order(order["id"], SOL)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.fetch_order("999999999", SOL)


def test_cancel_all_orders(api_stack: Any, make_trader: Callable[[dict[str, str]], Trader]) -> None:
    trader = make_trader({"USDC": "1000", "SOL": "5", "INR": "100"})
    exchange = connect(api_stack, trader)
    # A batch (signed per order, contract §2.5), then cancel them all.
    placed = exchange.create_orders(
        [
            {"symbol": SOL, "type": "limit", "side": "buy", "amount": 1, "price": 90},
            {"symbol": SOL, "type": "limit", "side": "buy", "amount": 2, "price": 91.5},
            {"symbol": SOL, "type": "limit", "side": "sell", "amount": 1.5, "price": 150},
        ]
    )
    assert exchange.last_request_body.startswith('[{"symbol":"SOL_USDC","side":"Bid"')
    assert [(o["side"], D(o["amount"]), D(o["price"]), o["status"]) for o in placed] == [
        ("buy", 1, 90, "open"),
        ("buy", 2, Decimal("91.5"), "open"),
        ("sell", Decimal("1.5"), 150, "open"),
    ]
    assert len({o["id"] for o in placed}) == 3
    elsewhere = exchange.create_order(TATA, "limit", "buy", 10, 5)
    assert len(exchange.fetch_open_orders()) == 4

    cancelled = exchange.cancel_all_orders(SOL)
    assert sorted(o["id"] for o in cancelled) == sorted(o["id"] for o in placed)
    assert {o["status"] for o in cancelled} == {"canceled"}
    assert {o["symbol"] for o in cancelled} == {SOL}
    by_id = {o["id"]: o for o in cancelled}
    assert D(by_id[placed[1]["id"]]["amount"]) == 2 and by_id[placed[2]["id"]]["side"] == "sell"
    assert [o["id"] for o in exchange.fetch_open_orders()] == [elsewhere["id"]]
    assert exchange.cancel_all_orders(SOL) == []
    balance = exchange.fetch_balance()
    assert D(balance["USDC"]["used"]) == 0 and D(balance["SOL"]["used"]) == 0
    assert D(balance["INR"]["used"]) == Decimal(50)


def test_market_orders_by_amount_and_by_cost(
    api_stack: Any, make_trader: Callable[[dict[str, str]], Trader]
) -> None:
    maker = make_trader({"SOL": "10", "USDC": "1000"})
    taker = make_trader({"USDC": "1000", "SOL": "5"})
    m = connect(api_stack, maker)
    t = connect(api_stack, taker)
    m.create_order(SOL, "limit", "sell", 1, 101)
    m.create_order(SOL, "limit", "sell", 2, 103)

    # By amount: 1 @ 101 + 1 @ 103.
    bought = t.create_order(SOL, "market", "buy", 2)
    assert (
        t.last_request_body
        == '{"orderType":"Market","quantity":"2","side":"Bid","symbol":"SOL_USDC"}'
    )
    assert (bought["type"], bought["status"]) == ("market", "closed")
    # No price on the wire for a market order; ccxt fills in the average.
    assert bought["info"]["price"] is None and bought["price"] == bought["average"]
    assert (D(bought["amount"]), D(bought["filled"]), D(bought["remaining"])) == (2, 2, 0)
    assert D(bought["cost"]) == Decimal("204") and D(bought["average"]) == Decimal("102")

    # By cost (ccxt sends quoteQuantity): 50 USDC buys whole lots at 103: 0.48 for 49.44.
    spent = t.create_order(SOL, "market", "buy", None, None, {"cost": 50})
    assert t.last_request_body == (
        '{"orderType":"Market","quoteQuantity":"50","side":"Bid","symbol":"SOL_USDC"}'
    )
    assert spent["info"]["quantity"] is None and spent["info"]["quoteQuantity"] == "50.000000"
    assert spent["status"] == "closed"
    assert (D(spent["filled"]), D(spent["cost"])) == (Decimal("0.48"), Decimal("49.44"))
    assert D(spent["average"]) == Decimal("103")

    # quoteQuantity directly, on the sell side: proceeds up to 20 against a bid at 95.
    m.create_order(SOL, "limit", "buy", 1, 95)
    sold = t.create_order(SOL, "market", "sell", None, None, {"quoteQuantity": "20"})
    assert '"quoteQuantity":"20"' in t.last_request_body
    assert sold["side"] == "sell" and sold["status"] == "closed"
    assert D(sold["cost"]) <= 20 and D(sold["cost"]) == D(sold["filled"]) * 95
    assert D(sold["filled"]) == Decimal("0.21")

    # The order as fetched at once, then the fills behind it.
    fetched = t.fetch_order(bought["id"], SOL)
    assert (fetched["status"], D(fetched["filled"]), D(fetched["average"])) == ("closed", 2, 102)
    fills = t.fetch_my_trades(SOL)
    assert len(fills) == 4
    mine = sorted((f for f in fills if f["order"] == bought["id"]), key=lambda f: D(f["price"]))
    assert [(D(f["price"]), D(f["amount"]), f["side"], f["takerOrMaker"]) for f in mine] == [
        (Decimal("101"), Decimal("1"), "buy", "taker"),
        (Decimal("103"), Decimal("1"), "buy", "taker"),
    ]
    assert {D(f["fee"]["cost"]) for f in mine} == {Decimal("0.0005")}  # 5 bps of 1 SOL
    (sell_fill,) = [f for f in fills if f["order"] == sold["id"]]
    assert sell_fill["fee"]["currency"] == "USDC"
    assert D(sell_fill["fee"]["cost"]) == fee(Decimal("0.21") * 95, 5, 6)


def test_post_only_ioc_fok(api_stack: Any, make_trader: Callable[[dict[str, str]], Trader]) -> None:
    maker = make_trader({"SOL": "10"})
    taker = make_trader({"USDC": "1000"})
    m = connect(api_stack, maker)
    t = connect(api_stack, taker)
    m.create_order(SOL, "limit", "sell", 0.5, 100)

    resting = t.create_order(SOL, "limit", "buy", 1, 98, {"postOnly": True})
    assert '"postOnly":true' in t.last_request_body
    assert (resting["status"], resting["postOnly"]) == ("open", True)
    assert t.fetch_open_orders(SOL)[0]["postOnly"] is True
    with pytest.raises(ccxt.InvalidOrder):
        t.create_order(SOL, "limit", "buy", 1, 100, {"postOnly": True})  # would take
    with pytest.raises(ccxt.InvalidOrder):  # ccxt itself refuses post-only with IOC
        t.create_order(SOL, "limit", "buy", 1, 100, {"postOnly": True, "timeInForce": "IOC"})

    # FOK: cannot fill 1 of the 0.5 on offer: accepted, then expired with nothing done.
    fok = t.create_order(SOL, "limit", "buy", 1, 100, {"timeInForce": "FOK"})
    assert (fok["status"], fok["info"]["status"], D(fok["filled"])) == ("canceled", "Expired", 0)

    # IOC: takes the 0.5 there is, the rest expires.
    ioc = t.create_order(SOL, "limit", "buy", 1, 100, {"timeInForce": "IOC"})
    assert ioc["timeInForce"] == "IOC"
    assert (ioc["status"], ioc["info"]["status"]) == ("canceled", "Expired")
    assert (D(ioc["filled"]), D(ioc["remaining"]), D(ioc["cost"])) == (
        Decimal("0.5"),
        Decimal("0.5"),
        Decimal("50"),
    )
    assert D(ioc["average"]) == 100
    assert t.fetch_order(ioc["id"], SOL)["status"] == "canceled"
    assert [o["id"] for o in t.fetch_open_orders()] == [resting["id"]]  # only the post-only
    balance = t.fetch_balance()
    assert (D(balance["USDC"]["free"]), D(balance["USDC"]["used"])) == (Decimal(852), Decimal(98))


def test_fill_history_and_order_history(
    api_stack: Any, make_trader: Callable[[dict[str, str]], Trader]
) -> None:
    maker = make_trader({"SOL": "5"})
    taker = make_trader({"USDC": "1000"})
    m = connect(api_stack, maker)
    t = connect(api_stack, taker)
    public = connect(api_stack)
    ask = m.create_order(SOL, "limit", "sell", 3, 120, {"clientOrderId": 7})
    first = t.create_order(SOL, "limit", "buy", 1, 120, {"clientOrderId": 4294967295})
    # Immediately after the fill: closed, its amounts and average.
    fetched = t.fetch_order(first["id"], SOL)
    assert (fetched["status"], D(fetched["filled"]), D(fetched["average"])) == ("closed", 1, 120)
    assert fetched["clientOrderId"] == "4294967295"
    second = t.create_order(SOL, "limit", "buy", 0.5, 121)  # at the maker's 120

    fills = t.fetch_my_trades(SOL)
    assert "fillType=User" in t.last_request_url
    assert [f["order"] for f in fills] == [first["id"], second["id"]]  # oldest first
    for fill, amount in zip(fills, [Decimal(1), Decimal("0.5")], strict=True):
        assert (fill["symbol"], fill["side"], fill["takerOrMaker"]) == (SOL, "buy", "taker")
        assert (D(fill["price"]), D(fill["amount"])) == (Decimal(120), amount)
        assert D(fill["cost"]) == amount * 120
        assert fill["fee"]["currency"] == "SOL" and D(fill["fee"]["cost"]) == fee(amount, 5, 9)
        assert isinstance(fill["timestamp"], int)  # parsed from the ISO string
        assert fill["datetime"].endswith("Z") and "T" in fill["info"]["timestamp"]
    # Fill times are the public trades' (both ms).
    public_times = {t["id"]: t["timestamp"] for t in public.fetch_trades(SOL, limit=100)}
    assert [public_times[f["id"]] for f in fills] == [f["timestamp"] for f in fills]
    assert fills[0]["info"]["clientId"] == 4294967295
    maker_fills = m.fetch_my_trades(SOL)
    assert {f["id"] for f in maker_fills} == {f["id"] for f in fills}
    assert {(f["side"], f["takerOrMaker"], f["order"]) for f in maker_fills} == {
        ("sell", "maker", ask["id"])
    }
    assert sum(D(f["fee"]["cost"]) for f in maker_fills) == fee(Decimal(120), 2, 6) + fee(
        Decimal(60), 2, 6
    )
    assert maker_fills[0]["info"]["clientId"] == 7
    # since and limit
    later = t.fetch_my_trades(SOL, since=fills[1]["timestamp"])
    assert [f["id"] for f in later] == [fills[1]["id"]]
    (newest,) = t.fetch_my_trades(SOL, limit=1)
    assert newest["id"] == fills[1]["id"]
    until = t.fetch_my_trades(SOL, params={"until": fills[0]["timestamp"]})
    assert "to=" in t.last_request_url
    assert [f["id"] for f in until] == [fills[0]["id"]]
    assert len(t.fetch_my_trades()) == 2  # every market

    # Order history: closed ones, and the maker's still open (partly filled).
    orders = t.fetch_orders(SOL)
    assert [(o["id"], o["status"]) for o in orders] == [
        (first["id"], "closed"),
        (second["id"], "closed"),
    ]
    assert [o["id"] for o in t.fetch_orders(SOL, limit=1)] == [second["id"]]  # the newest
    closed = t.fetch_closed_orders(SOL)
    assert [o["id"] for o in closed] == [first["id"], second["id"]]
    (partly,) = m.fetch_open_orders(SOL)
    assert (partly["id"], partly["status"], partly["info"]["status"]) == (
        ask["id"],
        "open",
        "PartiallyFilled",
    )
    assert (D(partly["filled"]), D(partly["remaining"])) == (Decimal("1.5"), Decimal("1.5"))
    assert m.fetch_closed_orders(SOL) == []


# -- ERRORS -----------------------------------------------------------------------------------


def test_errors_through_ccxt(
    api_stack: Any, make_trader: Callable[[dict[str, str]], Trader]
) -> None:
    poor = make_trader({"USDC": "10"})
    exchange = connect(api_stack, poor)
    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order(SOL, "limit", "buy", 1, 100)
    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order(SOL, "limit", "sell", 1, 100)  # holds no SOL
    with pytest.raises(ccxt.InvalidOrder):  # below the minimum notional (1 USDC)
        exchange.create_order(SOL, "limit", "buy", 0.01, 1)
    assert exchange.fetch_open_orders() == []
    # In a batch, each order succeeds or fails alone: the failure is an element {code, message}
    # (ccxt parses it into an order without id, and sorts it first: it has no timestamp).
    batch = exchange.create_orders(
        [
            {"symbol": SOL, "type": "limit", "side": "buy", "amount": 0.05, "price": 90},
            {"symbol": SOL, "type": "limit", "side": "buy", "amount": 1, "price": 90},
        ]
    )
    assert [(o["id"] is None, o["status"]) for o in batch] == [(True, None), (False, "open")]
    assert batch[0]["info"]["code"] == "INSUFFICIENT_FUNDS"
    assert [o["id"] for o in exchange.cancel_all_orders(SOL)] == [batch[1]["id"]]

    # ccxt rounds prices itself; sent raw, an off-tick price is refused before the engine.
    off_tick = api_stack.signed(
        poor,
        "POST",
        "/api/v1/order",
        {
            "orderType": "Limit",
            "price": "1.005",
            "quantity": "1",
            "side": "Bid",
            "symbol": "SOL_USDC",
        },
    )
    assert off_tick.status_code == 400
    assert off_tick.json()["code"] == "INVALID_PRICE"
    off_step = api_stack.signed(
        poor,
        "POST",
        "/api/v1/order",
        {
            "orderType": "Limit",
            "price": "1",
            "quantity": "1.001",
            "side": "Bid",
            "symbol": "SOL_USDC",
        },
    )
    assert (off_step.status_code, off_step.json()["code"]) == (400, "INVALID_QUANTITY")
    # The same bodies through ccxt's raw endpoint map to its exceptions.
    with pytest.raises(ccxt.InvalidOrder):
        exchange.privatePostApiV1Order(
            {
                "orderType": "Limit",
                "price": "1.005",
                "quantity": "1",
                "side": "Bid",
                "symbol": "SOL_USDC",
            }
        )
    with pytest.raises(ccxt.BadRequest):
        exchange.privatePostApiV1Order(
            {
                "orderType": "Limit",
                "price": "1",
                "quantity": "1.001",
                "side": "Bid",
                "symbol": "SOL_USDC",
            }
        )

    # Unknown symbols: ccxt refuses them locally; the server's INVALID_MARKET is BadSymbol too.
    with pytest.raises(ccxt.BadSymbol):
        exchange.fetch_order_book("DOGE/USDC")
    with pytest.raises(ccxt.BadSymbol):
        exchange.publicGetApiV1Depth({"symbol": "DOGE_USDC"})
    with pytest.raises(ccxt.BadSymbol):
        exchange.privateGetApiV1Orders({"symbol": "DOGE_USDC"})

    # Keys: a wrong secret, an unknown key, a read-only key trading.
    other = api_stack.new_trader({})
    forged = connect(api_stack, Trader(poor.account, poor.api_key, other.secret))
    with pytest.raises(ccxt.AuthenticationError):
        forged.fetch_balance()
    api_key, secret = signing.generate_keypair()  # a valid signature, by no known key
    stranger = connect(api_stack, Trader(0, api_key, secret))
    with pytest.raises(ccxt.AuthenticationError):
        stranger.fetch_balance()
    reader = api_stack.new_trader({"USDC": "100"}, scope="read")
    read_only = connect(api_stack, reader)
    assert D(read_only.fetch_balance()["USDC"]["free"]) == 100
    with pytest.raises(ccxt.OperationRejected):
        read_only.create_order(SOL, "limit", "buy", 0.1, 50)
    assert read_only.fetch_open_orders() == []
