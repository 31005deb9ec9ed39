"""Route handlers for the local WebSocket gateway's tests (and for measuring it from the command
line): they record what they are invoked with, and a ``$default`` message is a command.

``$default`` commands (the message is ``<command> <argument>``):

- ``echo TEXT``: reply TEXT (the result's ``body``); ``whoami``: reply the connection id;
- ``sleep SECONDS TEXT``: sleep, then reply TEXT;
- ``raise``: raise; ``bad``: return a body that is not a string;
- ``post TEXT``: post TEXT to the sender through the management API, reply nothing;
- anything else: reply nothing (a result without a body).

``$connect`` reads its query string: ``refuse=STATUS`` refuses with that status, ``explode``
raises, ``protocol=NAME`` selects that subprotocol, ``post_self`` tries to post to the
connection being opened (recording the error code it gets). Names in ``name=`` let a test find
a client's connection id (``RECORDER.connection_id(name)``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError


@dataclass(frozen=True)
class Invocation:
    route_key: str
    event: dict[str, Any]
    function_name: str
    remaining_ms: int
    thread_name: str

    @property
    def connection_id(self) -> str:
        return str(self.event["requestContext"]["connectionId"])


class Recorder:
    """The invocations of every handler, in the order they started; safe across threads."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._invocations: list[Invocation] = []
        self.notes: dict[str, Any] = {}

    def add(self, event: dict[str, Any], context: Any) -> None:
        invocation = Invocation(
            route_key=event["requestContext"]["routeKey"],
            event=event,
            function_name=context.function_name,
            remaining_ms=context.get_remaining_time_in_millis(),
            thread_name=threading.current_thread().name,
        )
        with self._changed:
            self._invocations.append(invocation)
            self._changed.notify_all()

    def clear(self) -> None:
        with self._changed:
            self._invocations.clear()
            self.notes.clear()

    def invocations(
        self, route_key: str | None = None, connection_id: str | None = None
    ) -> list[Invocation]:
        with self._changed:
            return [
                invocation
                for invocation in self._invocations
                if (route_key is None or invocation.route_key == route_key)
                and (connection_id is None or invocation.connection_id == connection_id)
            ]

    def wait_for(
        self,
        condition: Callable[[list[Invocation]], bool],
        timeout_s: float = 5.0,
        what: str = "the expected invocations",
    ) -> list[Invocation]:
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self._invocations), timeout_s):
                raise AssertionError(f"timed out waiting for {what}: {self._invocations}")
            return list(self._invocations)

    def connection_id(self, name: str) -> str:
        """The connection id of the client that connected with ``?name=NAME``."""
        for invocation in self.invocations("$connect"):
            if (invocation.event.get("queryStringParameters") or {}).get("name") == name:
                return invocation.connection_id
        raise KeyError(name)

    def disconnect_of(self, connection_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """The ``$disconnect`` event of a connection, once it came (it must come only once)."""
        self.wait_for(
            lambda invocations: any(
                i.route_key == "$disconnect" and i.connection_id == connection_id
                for i in invocations
            ),
            timeout_s,
            f"$disconnect of {connection_id}",
        )
        events = [i.event for i in self.invocations("$disconnect", connection_id)]
        assert len(events) == 1, events
        return events[0]


RECORDER = Recorder()

_clients_lock = threading.Lock()
_clients: dict[str, Any] = {}


def _management_client(event: dict[str, Any]) -> Any:
    # As an application builds it in AWS: from the event's domain name and stage.
    context = event["requestContext"]
    endpoint = f"http://{context['domainName']}/{context['stage']}"
    with _clients_lock:
        if endpoint not in _clients:
            _clients[endpoint] = boto3.client(
                "apigatewaymanagementapi", endpoint_url=endpoint, region_name="us-east-1"
            )
        return _clients[endpoint]


def connect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    RECORDER.add(event, context)
    query = event.get("queryStringParameters") or {}
    if "refuse" in query:
        return {"statusCode": int(query["refuse"]), "body": "refused by the test"}
    if "explode" in query:
        raise RuntimeError("$connect failed on purpose")
    if "post_self" in query:
        connection_id = event["requestContext"]["connectionId"]
        try:
            _management_client(event).post_to_connection(ConnectionId=connection_id, Data=b"hi")
        except ClientError as exc:
            RECORDER.notes["post_self"] = exc.response["Error"]["Code"]
        else:
            RECORDER.notes["post_self"] = "delivered"
    if "protocol" in query:
        return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": query["protocol"]}}
    return {"statusCode": 200}


def disconnect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    RECORDER.add(event, context)
    return {"statusCode": 200}


def default(event: dict[str, Any], context: Any) -> dict[str, Any]:
    RECORDER.add(event, context)
    command, _, argument = (event.get("body") or "").partition(" ")
    if command == "echo":
        return {"statusCode": 200, "body": argument}
    if command == "whoami":
        return {"statusCode": 200, "body": event["requestContext"]["connectionId"]}
    if command == "sleep":
        seconds, _, text = argument.partition(" ")
        time.sleep(float(seconds))
        return {"statusCode": 200, "body": text}
    if command == "raise":
        raise ValueError("$default failed on purpose")
    if command == "bad":
        return {"statusCode": 200, "body": {"not": "a string"}}
    if command == "post":
        _management_client(event).post_to_connection(
            ConnectionId=event["requestContext"]["connectionId"], Data=argument.encode()
        )
    return {"statusCode": 200}
