"""uvicorn's server as `shopfloor api` runs it: live streams ended on shutdown, readiness said through a file."""

from __future__ import annotations

import socket

import uvicorn

from api.machines.stream import StreamHub
from core.lifecycle import Readiness


class ApiServer(uvicorn.Server):
    """uvicorn's server, ending the app's live streams when it stops (it would otherwise wait for them forever) and
    creating the readiness file once it listens."""

    def __init__(self, config: uvicorn.Config, *, streams: StreamHub, ready: Readiness | None = None):
        super().__init__(config)
        self.streams = streams
        self.ready = ready or Readiness()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does (the app's lifespan, then the listening sockets); then say "ready"."""
        await super().startup(sockets)
        if self.started:
            self.ready.ready(host=self.config.host, port=self.config.port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End the streams, then shut down as uvicorn does (open requests finish, then the app's lifespan)."""
        self.ready.not_ready()
        self.streams.close()
        await super().shutdown(sockets)
