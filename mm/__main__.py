"""``python -m mm --url http://127.0.0.1:8000 --credentials maker.json [--mode maker|taker]
[--config config/mm.toml] [--seed N] [--interval S]``

The credentials file is ``{"account": 1, "apiKey": "...", "secret": "..."}`` (a trade-scoped
key); without ``--credentials`` the key and secret come from ``MM_API_KEY`` and ``MM_SECRET``,
so a secret never has to be on a command line. Logs go to stderr. SIGTERM or SIGINT stops it:
the maker cancels its orders first; the exit status is then 0. A second signal exits at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from cloudex import signing
from mm.client import RestClient
from mm.config import DEFAULT_CONFIG_PATH, ConfigError, MmConfig, load_config
from mm.maker import Maker
from mm.taker import Taker

__all__ = ["main", "build_parser", "load_credentials", "CredentialsError"]

log = logging.getLogger("mm")


class CredentialsError(ValueError):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mm",
        description="Cloudex market maker (and taker) over the public signed REST API.",
    )
    parser.add_argument("--url", required=True, help="the REST API's base URL")
    parser.add_argument(
        "--credentials",
        type=Path,
        help='JSON file {"account", "apiKey", "secret"}; default: $MM_API_KEY and $MM_SECRET',
    )
    parser.add_argument("--mode", choices=("maker", "taker"), default="maker")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    parser.add_argument("--seed", type=int, help="seed of the reference walks (and the taker)")
    parser.add_argument(
        "--interval",
        type=float,
        help="seconds between quoting passes (maker) or, on average, between orders (taker)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    return parser


def load_credentials(path: Path | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """``(api_key, secret)`` from the file, else from the environment; checked to be a pair."""
    if path is not None:
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise CredentialsError(f"{path} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CredentialsError(f"{path}: expected an object")
        api_key, secret = data.get("apiKey"), data.get("secret")
        where = str(path)
    else:
        api_key, secret = environ.get("MM_API_KEY"), environ.get("MM_SECRET")
        where = "MM_API_KEY/MM_SECRET"
    if not isinstance(api_key, str) or not isinstance(secret, str) or not api_key or not secret:
        raise CredentialsError(f"no API key and secret in {where}")
    try:
        derived = signing.public_key_of(secret)
    except (signing.SignatureError, ValueError) as exc:
        raise CredentialsError(f"{where}: the secret is not an Ed25519 seed: {exc}") from None
    if derived != api_key:
        raise CredentialsError(f"{where}: the API key is not the secret's public key")
    return api_key, secret


def _with_interval(config: MmConfig, mode: str, interval: float | None) -> MmConfig:
    if interval is None:
        return config
    if interval <= 0:
        raise ConfigError("--interval must be positive")
    if mode == "maker":
        return replace(config, maker=replace(config.maker, interval_s=interval))
    return replace(
        config,
        taker=replace(config.taker, min_interval_s=interval / 2, max_interval_s=interval * 1.5),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # urllib3 logs every retried connection at WARNING; the maker reports incidents itself.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        api_key, secret = load_credentials(args.credentials, os.environ)
        config = _with_interval(load_config(args.config), args.mode, args.interval)
    except (CredentialsError, ConfigError) as exc:
        log.error("%s", exc)
        return 2
    client = RestClient(args.url, api_key, secret, window_ms=config.maker.window_ms)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if args.mode == "maker":
            Maker(client, config, seed=args.seed).run(stop)
        else:
            Taker(client, config, seed=args.seed).run(stop)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
