"""Stream names: Backpack's, the original system's aliases, and what is refused."""

from __future__ import annotations

import pytest

from cloudex.streams import Stream, StreamError, parse_stream

MARKETS = {"SOL_USDC", "BTC_USDC"}


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        ("depth.SOL_USDC", "depth.SOL_USDC"),
        ("trade.SOL_USDC", "trade.SOL_USDC"),
        ("ticker.BTC_USDC", "ticker.BTC_USDC"),
        ("bookTicker.SOL_USDC", "bookTicker.SOL_USDC"),
        ("kline.1m.SOL_USDC", "kline.1m.SOL_USDC"),
        ("kline.1month.SOL_USDC", "kline.1month.SOL_USDC"),
        ("account.orderUpdate", "account.orderUpdate"),
        ("account.orderUpdate.SOL_USDC", "account.orderUpdate.SOL_USDC"),
        ("account.balanceUpdate", "account.balanceUpdate"),
        # The original system's names are aliases.
        ("depth@SOL_USDC", "depth.SOL_USDC"),
        ("trades@SOL_USDC", "trade.SOL_USDC"),
        ("ticker@SOL_USDC", "ticker.SOL_USDC"),
    ],
)
def test_known_streams_parse_to_their_canonical_name(topic: str, name: str) -> None:
    stream = parse_stream(topic, MARKETS)
    assert stream is not None and stream.name == name
    assert stream.private == name.startswith("account.")


def test_rfq_updates_are_accepted_and_ignored() -> None:
    assert parse_stream("account.rfqUpdate", MARKETS) is None


@pytest.mark.parametrize(
    "topic",
    [
        "depth.DOGE_USDC",  # no such market
        "depth",
        "depth.",
        "trade@SOL_USDC",  # the original's alias is trades@
        "kline.2m.SOL_USDC",
        "kline.1m",
        "account.orderUpdate.DOGE_USDC",
        "account.positionUpdate",
        "orders.SOL_USDC",
        "",
        "x" * 101,
        17,
        None,
        ["depth.SOL_USDC"],
    ],
)
def test_anything_else_is_refused_with_a_reason(topic: object) -> None:
    with pytest.raises(StreamError):
        parse_stream(topic, MARKETS)


def test_a_kline_stream_knows_its_interval_and_market() -> None:
    assert parse_stream("kline.1h.BTC_USDC", MARKETS) == Stream("kline", "BTC_USDC", "1h")
