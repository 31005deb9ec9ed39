"""Cloudex's market maker (``python -m mm``): one process quoting every configured market
through the public signed REST API, and a taker mode that trades against it.

- :mod:`mm.core`: the pure quoting core (reference walk, ladder, inventory skew, order plan);
- :mod:`mm.client`: the thin signed REST client;
- :mod:`mm.maker` and :mod:`mm.taker`: the two loops;
- :mod:`mm.config`: ``config/mm.toml``.

See ``docs/market-maker.md``.
"""
