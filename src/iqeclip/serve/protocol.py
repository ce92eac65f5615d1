"""Deadlines for slow clients: uvicorn's HTTP/1.1 protocol (h11) with a time limit on the
request's headers and another on its body.

uvicorn closes an idle kept-alive connection (``timeout_keep_alive``), but nothing else: a fresh
connection that sends nothing, or a client that trickles one byte every few seconds into its
request line, headers or body, holds its connection (and a file descriptor) for as long as it
likes, and a few hundred of them take every slot ``--max_connections`` allows. ASGI middleware
cannot help with the headers: the app is called only once they are complete. Here the protocol
itself times the request: from the connection (or the first byte of the next request on a
kept-alive connection) to the end of its headers, and from there to the end of its body. A
request over either deadline is answered 408 (when nothing was answered yet) and its connection
closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

_WAITING = {h11.IDLE: "header", h11.SEND_BODY: "body"}  # the client's h11 state: what is late


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request's headers and one for its body.

    The deadlines are class attributes: :func:`timed_protocol` makes a subclass with the
    server's values, since uvicorn builds one protocol object per connection from the class.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None  # "header", "body", or None (the request is all in)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Start the deadline of what the client is sending now, if it changed.

        The clock of the headers starts at the connection, or at the first byte of a next
        request (uvicorn's keep-alive timeout covers the silence between requests); the clock of
        the body starts when the headers are complete. A request that is all in has none.
        """
        phase = _WAITING.get(self.conn.their_state)
        if phase != self._phase and not self.transport.is_closing():
            self._arm(phase)

    def _arm(self, phase: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._phase, self._deadline = phase, None
        if phase is not None:
            limit = self.header_timeout_s if phase == "header" else self.body_timeout_s
            self._deadline = self.loop.call_later(limit, self._expire)

    def _expire(self) -> None:
        """Answer 408 if nothing was answered yet, and close the connection."""
        phase, self._deadline = self._phase, None
        if self.transport.is_closing():
            return
        if phase == "header":
            message = (
                f"the request line and headers did not arrive within {self.header_timeout_s:g} s "
                "(iqeclip serve --header_timeout_s)"
            )
        else:
            message = (
                f"the request body did not arrive within {self.body_timeout_s:g} s of its "
                "headers (iqeclip serve --body_timeout_s)"
            )
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.info(f"{client}: connection closed, {message}")
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # the app has not answered
            body = json.dumps({"error": message}).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        if self.cycle is not None and not self.cycle.response_complete:
            # the app still working on the request: its reads end, its answer goes nowhere
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


def timed_protocol(header_timeout_s: float, body_timeout_s: float) -> type[TimedH11Protocol]:
    """The protocol class uvicorn runs (``uvicorn.run(http=...)``) with these deadlines."""
    return type(
        "ServeProtocol",
        (TimedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )
