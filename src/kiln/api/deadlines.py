"""A request's body must arrive within a deadline: a client that sends its headers and then stalls would
otherwise hold its connection (and the authentication that waits for the body) for ever."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.api.http import declares_no_body
from kiln.errors import KilnError


class BodyTimeout(KilnError):
    """The request body did not arrive in time."""

    code = "OperationTimedOut"
    status = 408


class BodyDeadline:
    """Every receive of a request's body ends by the deadline; past it, 408 OperationTimedOut (with Batch's
    body, and the connection closed: the rest of the body may still be on its way)."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or declares_no_body(scope):
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        complete = late = False

        async def receive_by_deadline() -> Message:
            nonlocal complete, late
            if complete:  # the body is in: what is left to receive is the disconnect, whenever it comes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                late = True
                raise BodyTimeout(f"The request body did not arrive within {self.timeout:g} seconds.") from None
            complete = not message.get("more_body", False)
            return message

        async def send_closing_if_late(message: Message) -> None:
            if late and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive_by_deadline, send_closing_if_late)
