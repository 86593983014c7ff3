"""Real parts for the feature tests: a redis-server of our own, a counting TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import hiredis

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


def features_section(prefix: str, **store: Any) -> dict[str, Any]:
    """A raw `features` section: users and items under keys that start with prefix."""
    return {
        "store": store or {"kind": "memory"},
        "entities": {
            "user": {
                "key": prefix + "user:{id}",
                "id_column": "user_id",
                "fields": [
                    {"name": "activity", "default": 1.5},
                    {"name": "tenure", "dtype": "int32", "default": -1},
                    {"name": "premium", "dtype": "bool"},
                ],
            },
            "item": {
                "key": prefix + "item:{id}",
                "id_column": "item_id",
                "fields": [
                    {"name": "popularity", "default": 0.25},
                    {"name": "price", "default": 9.5},
                    {"name": "emb_0"},
                ],
            },
        },
        "inputs": {
            # Interleaved on purpose: the row order is the config's, not the entities'.
            "ranker": {
                "candidates": "item",
                "row": [
                    "item.price",
                    "user.activity",
                    "item.popularity",
                    "user.tenure",
                    "item.emb_0",
                ],
            }
        },
    }


class CountingProxy:
    """A TCP proxy in front of Redis that counts round trips and can stop answering.

    A round trip starts when the client sends after having been answered (or first):
    a client that pipelines N commands in one write makes one, a client that waits for
    each reply makes N. `hold()` keeps forwarding off, like a Redis that hangs.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._answered = True
        self._held = asyncio.Event()
        self._held.set()
        self._client_writers: list[asyncio.StreamWriter] = []
        self.round_trips = 0
        self.commands: list[bytes] = []  # RESP command names, in order
        self.connections = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hold(self) -> None:
        self._held.clear()

    def release(self) -> None:
        self._held.set()

    def cut_connections(self) -> None:
        """Reset every client connection, as a network failure would, without warning."""
        for writer in self._client_writers:
            writer.transport.abort()
        self._client_writers.clear()

    def reset(self) -> None:
        self.round_trips = 0
        self.commands.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._client_writers.append(client_w)
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        commands = hiredis.Reader()  # commands are RESP arrays, as replies are
        pumps = [
            asyncio.create_task(self._pump(client_r, upstream_w, commands)),
            asyncio.create_task(self._pump(upstream_r, client_w, None)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for writer in (client_w, upstream_w):
                writer.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        commands: hiredis.Reader | None,  # set for the client's side
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1 << 20):
                await self._held.wait()
                if commands is None:
                    self._answered = True
                else:
                    if self._answered:
                        self.round_trips += 1
                        self._answered = False
                    commands.feed(data)
                    while (command := commands.gets()) is not False:
                        self.commands.append(command[0].upper())
                writer.write(data)
                await writer.drain()
