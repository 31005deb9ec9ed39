"""A real journal without the engine service: commands run through the pure engine and are
sealed into blocks by the same :class:`JournalBlockBuilder` the service uses, ready to be fed
to the persister as SQS records. Used by the read-model tests and ``bench/persister_bench.py``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from typing import Any

from cloudex.enums import OrderType, Side
from cloudex.journal import (
    EpochStarted,
    JournalBlockBuilder,
    JournalRecord,
    encode_journal_message,
    marker_dedup_id,
)
from cloudex.messages import AnyCommand, CancelOrder, Deposit, PlaceOrder, Tick, Withdraw
from cloudex.seed import market_seed_commands
from engine_service.core import Engine
from localgw.sqs_event_source import lambda_sqs_event
from tests.stubs import START_TS, markets_config

__all__ = ["JournalFactory", "trading_commands", "sqs_events"]

QUEUE_URL = "http://127.0.0.1:4566/queue/us-east-1/000000000000/events.fifo"


class JournalFactory:
    """An engine and a journal: ``run(commands)`` stamps each command (``step_us`` apart),
    executes it and adds it to the current block; blocks seal when full (``max_bytes``) or every
    ``records_per_block`` records. ``messages`` holds ``(dedup_id, body)`` in send order, the
    epoch marker first."""

    def __init__(
        self,
        *,
        epoch: int = 1,
        start_ts: int = START_TS,
        step_us: int = 1_000,
        records_per_block: int = 200,
        max_bytes: int | None = None,
        seed_markets: bool = True,
    ) -> None:
        self.engine = Engine()
        self.epoch = epoch
        self.ts = start_ts
        self.step_us = step_us
        self.records_per_block = records_per_block
        self.builder = (
            JournalBlockBuilder(epoch)
            if max_bytes is None
            else JournalBlockBuilder(epoch, max_bytes)
        )
        self.seq = 0
        self.messages: list[tuple[str, str]] = [
            (
                marker_dedup_id(epoch),
                encode_journal_message(EpochStarted(epoch, "factory", start_ts)),
            )
        ]
        if seed_markets:
            self.run(market_seed_commands(markets_config(), start_ts))

    def run(self, commands: Iterable[AnyCommand], *, seal: bool = True) -> None:
        for command in commands:
            self.ts += self.step_us
            command.ts = self.ts
            result = self.engine.execute(command)
            self.seq += 1
            full = self.builder.add(JournalRecord(self.seq, command, result), self.engine.seq)
            if full or len(self.builder) >= self.records_per_block:
                self.seal()
        if seal:
            self.seal()

    def seal(self) -> None:
        sealed = self.builder.seal(self.engine.state_hash(), self.ts)
        if sealed is not None:
            self.messages.append(sealed)

    def take(self) -> list[tuple[str, str]]:
        """The messages sealed since the last ``take``."""
        messages, self.messages = self.messages, []
        return messages


_ids = itertools.count(1)


def trading_commands(
    rng: random.Random,
    *,
    accounts: int,
    orders: int,
    market: str = "SOL_USDC",
    deposits: bool = True,
    spread: int = 10,
) -> Iterator[AnyCommand]:
    """Deposits for every account, then limit orders around 100.00 that cross often, some market
    orders, cancels of earlier orders and the odd withdrawal and heartbeat (``ts`` is stamped by
    the factory)."""
    if deposits:
        for account in range(1, accounts + 1):
            for asset, amount, via in (
                ("USDC", 10_000_000 * 10**6, "wire"),
                ("SOL", 100_000 * 10**9, "chain"),
            ):
                yield Deposit(
                    id=f"d{next(_ids)}",
                    ts=0,
                    account=account,
                    asset=asset,
                    amount=amount,
                    reference=f"{via}-{account}",
                )
    placed: list[tuple[int, int]] = []  # (account, order sequence number n)
    for n in range(orders):
        account = rng.randint(1, accounts)
        roll = rng.random()
        if roll < 0.01:
            yield Withdraw(
                id=f"w{next(_ids)}",
                ts=0,
                account=account,
                asset="USDC",
                amount=rng.randint(1, 100) * 10**6,
                reference=f"out-{n}",
            )
        elif roll < 0.02:
            yield Tick(id=f"t{next(_ids)}", ts=0)
        elif roll < 0.12 and placed:
            owner, client_id = placed[rng.randrange(len(placed))]
            yield CancelOrder(
                id=f"x{next(_ids)}", ts=0, account=owner, market=market, client_id=client_id
            )
        elif roll < 0.17:
            yield PlaceOrder(
                id=f"m{next(_ids)}",
                ts=0,
                account=account,
                market=market,
                side=rng.choice([Side.BID, Side.ASK]),
                order_type=OrderType.MARKET,
                quantity=rng.randint(1, 30),
            )
        else:
            client_id = n + 1
            placed.append((account, client_id))
            yield PlaceOrder(
                id=f"o{next(_ids)}",
                ts=0,
                account=account,
                market=market,
                side=rng.choice([Side.BID, Side.ASK]),
                order_type=OrderType.LIMIT,
                price=rng.randint(10_000 - spread, 10_000 + spread),
                quantity=rng.randint(1, 50),
                client_id=client_id,
            )


def sqs_events(messages: list[tuple[str, str]], batch_size: int = 10) -> Iterator[dict[str, Any]]:
    """Lambda SQS events of ``batch_size`` records each, as the FIFO event source sends them."""
    for start in range(0, len(messages), batch_size):
        batch = []
        for offset, (dedup_id, body) in enumerate(messages[start : start + batch_size]):
            number = start + offset
            batch.append(
                {
                    "MessageId": f"m-{number}",
                    "ReceiptHandle": f"r-{number}",
                    "Body": body,
                    "MD5OfBody": "",
                    "Attributes": {
                        "MessageGroupId": "journal",
                        "MessageDeduplicationId": dedup_id,
                        "SequenceNumber": str(10**18 + number),
                        "ApproximateReceiveCount": "1",
                        "SentTimestamp": "0",
                        "ApproximateFirstReceiveTimestamp": "0",
                        "SenderId": "factory",
                    },
                }
            )
        yield lambda_sqs_event(batch, queue_url=QUEUE_URL)
