"""Cloudex engine service: the single writer of books and balances.

``engine_service.core`` is the pure matching engine and ledger (no I/O, no clock); the service
around it (queues, journal, Redis) lives beside it.
"""
