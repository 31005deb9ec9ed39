"""PostgreSQL connections for functions that serve requests on several threads."""

from __future__ import annotations

import threading

import psycopg

from cloudex.aws_connect import connect

__all__ = ["ThreadConnections"]


class ThreadConnections:
    """One autocommit connection per thread, reopened when it broke (RDS Proxy and failovers
    drop idle ones). Autocommit: every request only reads, or writes one statement. Connections
    are opened by :func:`cloudex.aws_connect.connect`: each gets a fresh IAM token if in use."""

    def __init__(self, database_url: str, connect_timeout_s: int = 5) -> None:
        self.database_url = database_url
        self.connect_timeout_s = connect_timeout_s
        self._local = threading.local()

    def get(self) -> psycopg.Connection:
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            conn.close()
            conn = None
        if conn is None:
            conn = connect(
                self.database_url, autocommit=True, connect_timeout=self.connect_timeout_s
            )
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection, if it has one."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()
