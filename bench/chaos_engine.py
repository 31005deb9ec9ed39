"""Chaos: the engine service SIGKILLed again and again while 20,000+ commands flow through
LocalStack SQS; then nothing may be lost, nothing applied twice, money conserved, the journal
gap-free, the final state a clean replay's, and the balance audit (ledger vs replay vs final
snapshot, ``engine_service.audit``) clean once the read models have caught up.

The first two kills are forced at the protocol's most delicate points (right after the journal
send; after Redis but before the inbound messages are deleted); the rest come at random
moments. Needs PostgreSQL, Redis and LocalStack (``./dev services``). Prints as its LAST line:
{"bench":"chaos","commands":N,"kills":K,"lost":0,"duplicates":0,"conserved":true,"state_match":true,
 "audit_differences":0,"audit_ok":true}
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
# The persister's Powertools logs and metrics go to stdout; keep this script's output readable.
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

import boto3
import psycopg
import redis

from bench.engine_service_bench import REDIS_URL, fresh_database
from engine_service.audit import audit
from tests.integration.chaos import run_chaos
from tests.integration.engine_support import EngineStack, trading_workload, wait_for_projections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    accounts = 100
    commands = trading_workload(rng, accounts=accounts, orders=args.commands - 2 * accounts)
    database_url = fresh_database("cloudex_bench_chaos")
    redis.Redis.from_url(REDIS_URL).flushdb()
    log_dir = Path(tempfile.mkdtemp(prefix="cloudex-chaos-"))
    stack = EngineStack(boto3.client("sqs"), database_url, REDIS_URL, log_dir)
    stack.start_persister()
    started = time.monotonic()
    try:
        report = run_chaos(stack, commands, kills=args.kills, rng=rng, rate_per_s=600.0)
        # The read models catch up with the journal; then the balance ledger, a replay of the
        # journal and the final snapshot must agree account by account.
        wait_for_projections(database_url)
        with psycopg.connect(database_url) as conn:
            audited = audit(conn)
        print(audited.to_text(), file=sys.stderr)
    finally:
        stack.close_quietly()
    print(
        f"{report['commands']} commands, {report['kills']} kills "
        f"({report['forced_faults']} forced), {report['epochs']} engine runs, "
        f"{time.monotonic() - started:.0f} s; engine logs in {log_dir}",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "bench": "chaos",
                "commands": report["commands"],
                "kills": report["kills"],
                "lost": report["lost"],
                "duplicates": report["duplicates"],
                "conserved": report["conserved"],
                "state_match": report["state_match"],
                "audit_differences": audited.differences,
                "audit_ok": audited.ok,
            }
        )
    )


if __name__ == "__main__":
    main()
