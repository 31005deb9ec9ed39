"""How long ``./dev up`` takes to be ready, and how much memory the running exchange uses.

Runs the README's first command on this machine (dependencies already installed) with its own
home, ports, database, Redis database and queues; times it from launch to the ready line; lets
the market maker quote for ``--settle`` seconds; sums the resident memory (RSS) of every
process the command started (found by their environment), per component; stops it with
SIGINT and times the stop. Last line: one JSON object.

    .venv/bin/python bench/local_up.py [--runs 2] [--settle 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
import psycopg
import redis

from localgw.stack import ROOT
from localgw.up import READY_LINE

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_DB = 15


def _free_base(count: int = 4) -> int:
    import socket

    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count < 65000:
            try:
                for port in range(base, base + count):
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", port))
                return base
            except OSError:
                continue


def _processes(marker: bytes) -> dict[int, tuple[str, int]]:
    """pid -> (component, RSS bytes) of live processes whose environment holds ``marker``."""
    found: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        rss_kb = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
        found[int(entry.name)] = (_component(argv), rss_kb * 1024)
    return found


def _component(argv: list[bytes]) -> str:
    args = [a.decode(errors="replace") for a in argv if a]
    if "-m" in args:
        module = args[args.index("-m") + 1]
        if module == "mm":
            return "mm-" + (args[args.index("--mode") + 1] if "--mode" in args else "maker")
        return module.split(".")[-1]
    if any("multiprocessing" in a or "spawn" in a for a in args):
        return "lambda_workers"
    return Path(args[0]).name if args else "?"


def run_once(settle_s: float) -> dict[str, object]:
    run = uuid.uuid4().hex[:8]
    home = Path(f"/tmp/cloudex-bench-{run}")
    database = f"cloudex_bench_{run}"
    env = {
        **os.environ,
        "CLOUDEX_HOME": str(home),
        "CLOUDEX_PORT": str(_free_base()),
        "CLOUDEX_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}",
        "CLOUDEX_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "CLOUDEX_QUEUE_PREFIX": f"bench-{run}-",
        "PYTHONUNBUFFERED": "1",
    }
    redis.Redis.from_url(env["CLOUDEX_REDIS_URL"]).flushdb()
    started = time.monotonic()
    process = subprocess.Popen(
        ["./dev", "up"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    ready_s = None
    for line in process.stdout:
        if line.startswith(READY_LINE):
            ready_s = time.monotonic() - started
            break
    if ready_s is None:
        raise RuntimeError("./dev up never got ready")
    drain = subprocess.Popen(["cat"], stdin=process.stdout, stdout=subprocess.DEVNULL)
    time.sleep(settle_s)
    marker = f"CLOUDEX_HOME={home}".encode()
    processes = _processes(marker)
    by_component: dict[str, int] = {}
    for component, rss in processes.values():
        by_component[component] = by_component.get(component, 0) + rss
    stop_started = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    process.wait(120)
    stop_s = time.monotonic() - stop_started
    drain.kill()
    leftovers = len(_processes(marker))
    sqs = boto3.client(
        "sqs", endpoint_url="http://127.0.0.1:4566", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    for name in ("orders.fifo", "orders-dlq.fifo", "events.fifo"):
        url = sqs.get_queue_url(QueueName=env["CLOUDEX_QUEUE_PREFIX"] + name)["QueueUrl"]
        sqs.delete_queue(QueueUrl=url)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {
        "ready_s": round(ready_s, 2),
        "stop_s": round(stop_s, 2),
        "processes": len(processes),
        "rss_mib": round(sum(by_component.values()) / 2**20, 1),
        "rss_mib_by_component": {
            k: round(v / 2**20, 1) for k, v in sorted(by_component.items(), key=lambda kv: -kv[1])
        },
        "leftover_processes": leftovers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of quoting first")
    args = parser.parse_args()
    runs = [run_once(args.settle) for _ in range(args.runs)]
    for result in runs:
        print(json.dumps(result), flush=True)
    print(
        json.dumps(
            {
                "bench": "local_up",
                "ready_s": min(r["ready_s"] for r in runs),  # type: ignore[type-var]
                "ready_s_runs": [r["ready_s"] for r in runs],
                "rss_mib": max(r["rss_mib"] for r in runs),  # type: ignore[type-var]
                "processes": runs[-1]["processes"],
                "rss_mib_by_component": runs[-1]["rss_mib_by_component"],
                "stop_s": max(r["stop_s"] for r in runs),  # type: ignore[type-var]
                "leftover_processes": sum(r["leftover_processes"] for r in runs),  # type: ignore[misc]
                "settle_s": args.settle,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
