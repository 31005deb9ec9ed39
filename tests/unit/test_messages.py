"""cloudex.messages: every command, event and result survives the msgpack codecs."""

from __future__ import annotations

import msgspec
import pytest

from cloudex.enums import (
    BalanceReason,
    CloseReason,
    ErrorCode,
    MarketState,
    OrderStatus,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from cloudex.markets import AssetSpec, MarketSpec
from cloudex.messages import (
    AddMarket,
    AnyEvent,
    BalanceChanged,
    CancelAllOrders,
    CancelOrder,
    Candle,
    CommandResult,
    Deposit,
    DepthChanged,
    MarketAdded,
    MarketFeesChanged,
    MarketStateChanged,
    MarketStats,
    OrderAccepted,
    OrderClosed,
    OrderView,
    PlaceOrder,
    SetMarketFees,
    SetMarketState,
    Tick,
    Ticker,
    TradeExecuted,
    Withdraw,
    decode_command,
    decode_event,
    decode_result,
    encode,
)

SPEC = MarketSpec("SOL_USDC", "SOL", "USDC", "0.01", "0.01", "0.01", "100000", "1000000", "1", 2, 5)
SOL = AssetSpec("SOL", 9, "Solana")
USDC = AssetSpec("USDC", 6, "USD Coin")

COMMANDS = [
    Deposit(id="d", ts=1, account=1, asset="SOL", amount=10**9, reference="tx"),
    Withdraw(id="w", ts=2, deadline=5, account=1, asset="USDC", amount=7),
    PlaceOrder(
        id="p",
        ts=3,
        account=1,
        market="SOL_USDC",
        side=Side.BID,
        order_type=OrderType.LIMIT,
        quantity=5,
        price=10_000,
        time_in_force=TimeInForce.IOC,
        client_id=2**32 - 1,
        self_trade_prevention=SelfTradePrevention.REJECT_BOTH,
    ),
    PlaceOrder(
        id="m",
        ts=3,
        account=1,
        market="SOL_USDC",
        side=Side.ASK,
        order_type=OrderType.MARKET,
        quote_quantity=10**6,
    ),
    CancelOrder(id="c", ts=4, account=1, market="SOL_USDC", client_id=9),
    CancelAllOrders(id="ca", ts=4, account=1, market="SOL_USDC"),
    AddMarket(id="am", ts=0, market=SPEC, base=SOL, quote=USDC),
    SetMarketFees(id="f", ts=5, market="SOL_USDC", maker_fee_bps=0, taker_fee_bps=10),
    SetMarketState(id="s", ts=6, market="SOL_USDC", state=MarketState.CANCEL_ONLY),
    Tick(id="t", ts=7),
]

CANDLE = Candle("1m", 60_000_000, 10, 12, 9, 11, 5, 5_000, 3)
EVENTS = [
    OrderAccepted(
        1,
        3,
        1,
        1,
        "SOL_USDC",
        Side.BID,
        OrderType.LIMIT,
        TimeInForce.GTC,
        10_000,
        5,
        None,
        7,
        False,
        SelfTradePrevention.REJECT_TAKER,
    ),
    TradeExecuted(2, 3, "SOL_USDC", 1, 10_000, 5, 5_000_000, 1, 2, 1, 2, True, 25_000, 1_000),
    OrderClosed(
        3,
        3,
        1,
        1,
        "SOL_USDC",
        OrderStatus.FILLED,
        CloseReason.FILLED,
        5,
        5_000_000,
        Side.BID,
        OrderType.LIMIT,
        TimeInForce.GTC,
        10_000,
        5,
        None,
        7,
        False,
        SelfTradePrevention.REJECT_TAKER,
        2,
    ),
    BalanceChanged(4, 3, 1, "SOL", 10, 0, 10, 0, BalanceReason.ORDER, 1),
    BalanceChanged(5, 3, 1, "SOL", 10, 0, 10, 0, BalanceReason.DEPOSIT, "ref-1"),
    DepthChanged(6, 3, "SOL_USDC", 4, ((10_000, 0), (9_999, 3)), ()),
    MarketAdded(7, 0, SPEC, SOL, USDC),
    MarketFeesChanged(8, 5, "SOL_USDC", 1, 2),
    MarketStateChanged(9, 6, "SOL_USDC", MarketState.CLOSED),
    MarketStats(10, 7, "SOL_USDC", Ticker(10, 11, 12, 9, 5, 5_000, 3), [CANDLE], (9_999, 3), None),
    MarketStats(11, 7, "SOL_USDC", Ticker(None, None, None, None, 0, 0, 0), [], None, None),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_command_encode_decode_round_trips(command: object) -> None:
    # Given a command / When encoded and decoded / Then the same command, of the same class
    decoded = decode_command(encode(command))  # type: ignore[arg-type]
    assert type(decoded) is type(command)
    assert decoded == command


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_encode_decode_round_trips(event: object) -> None:
    # Given an event / When encoded and decoded / Then the same event, of the same class
    decoded = decode_event(encode(event))  # type: ignore[arg-type]
    assert type(decoded) is type(event)
    assert decoded == event


def test_event_list_encodes_as_one_array() -> None:
    # Given a list of events / When encoded / Then it decodes as that list
    data = encode(EVENTS)  # type: ignore[arg-type]
    assert msgspec.msgpack.decode(data, type=list[AnyEvent]) == EVENTS


def test_result_encode_decode_round_trips_with_events_and_views() -> None:
    # Given a result with events and a view / When round-tripped / Then equal
    view = OrderView(
        1,
        1,
        "SOL_USDC",
        None,
        Side.ASK,
        OrderType.MARKET,
        TimeInForce.GTC,
        None,
        None,
        10**6,
        1,
        10**6,
        OrderStatus.FILLED,
        False,
        SelfTradePrevention.REJECT_MAKER,
        3,
    )
    result = CommandResult("p", None, "", EVENTS, [view])
    decoded = decode_result(encode(result))
    assert decoded == result
    assert decoded.ok
    assert not decoded.duplicate


def test_result_rejection_is_not_ok_and_round_trips() -> None:
    # Given a rejected duplicate result / When round-tripped / Then equal and not ok
    result = CommandResult("x", ErrorCode.INSUFFICIENT_FUNDS, "Insufficient funds", [], [], True)
    decoded = decode_result(encode(result))
    assert decoded == result
    assert not decoded.ok
    assert decoded.error is ErrorCode.INSUFFICIENT_FUNDS


def test_decode_command_wrong_field_type_raises_validation_error() -> None:
    # Given a Deposit with a string amount / When decoded / Then ValidationError
    raw = msgspec.msgpack.encode(["Deposit", "id", 1, None, 1, "SOL", "lots"])
    with pytest.raises(msgspec.ValidationError):
        decode_command(raw)


def test_decode_command_unknown_tag_raises_validation_error() -> None:
    # Given an unknown tag / When decoded / Then ValidationError
    with pytest.raises(msgspec.ValidationError):
        decode_command(msgspec.msgpack.encode(["Nope", "id", 1, None]))


def test_decode_command_event_bytes_are_not_a_command() -> None:
    # Given an encoded event / When decoded as a command / Then ValidationError
    with pytest.raises(msgspec.ValidationError):
        decode_command(encode(EVENTS[0]))  # type: ignore[arg-type]


def test_place_order_defaults_are_gtc_reject_taker() -> None:
    # Given a PlaceOrder without options / Then GTC, RejectTaker, not postOnly, no deadline
    order = PlaceOrder(
        id="p", ts=1, account=1, market="M_N", side=Side.BID, order_type=OrderType.LIMIT
    )
    assert order.time_in_force is TimeInForce.GTC
    assert order.self_trade_prevention is SelfTradePrevention.REJECT_TAKER
    assert not order.post_only
    assert order.deadline is None


def test_enums_encoded_use_backpack_spellings() -> None:
    # Given the enums / Then their values are Backpack's spellings, also on the wire
    assert Side.BID == "Bid"
    assert OrderStatus.PARTIALLY_FILLED == "PartiallyFilled"
    assert SelfTradePrevention.REJECT_BOTH == "RejectBoth"
    assert MarketState.CANCEL_ONLY == "CancelOnly"
    assert ErrorCode.TRADING_PAUSED == "TRADING_PAUSED"
    # Encoded as their string values on the wire
    assert msgspec.msgpack.decode(encode(EVENTS[8]))[-1] == "Closed"  # type: ignore[arg-type]


def test_a_command_whose_integers_do_not_fit_64_bits_is_malformed() -> None:
    # The engine could not journal it: refused when decoded, so it is answered and dropped.
    import msgspec
    import pytest

    from cloudex.messages import PlaceOrder, decode_command_body

    body = (
        '["PlaceOrder","c1",0,null,7,"SOL_USDC","Bid","Limit",1,%d,null,"GTC",false,null,'
        '"RejectTaker"]'
    )
    assert isinstance(decode_command_body(body % (2**63 - 1)), PlaceOrder)
    with pytest.raises(msgspec.ValidationError):
        decode_command_body(body % 2**63)
