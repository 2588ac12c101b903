"""`bastion serve`: open the store, listen, and shut down cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from bastion.audit.store import Store
from bastion.config import Settings
from bastion.identity.ca import Authorities
from bastion.logs import log
from bastion.ssh import server
from bastion.ssh.context import BastionContext


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    store = Store(settings.server.database_path, settings.recording.flush_interval)
    ctx = BastionContext(settings, Authorities(settings.server.state_dir), store)
    interrupted = store.close_interrupted()
    if interrupted:
        ctx.audit("sessions.interrupted", sessions=interrupted)
    ctx.audit("config.loaded", path=str(settings.path), hosts=[h.name for h in settings.hosts])
    listener = await server.listen(ctx)
    host, port = settings.server.listen
    log("listening", address=f"{host}:{port}", hosts=len(settings.hosts))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        listener.close()
        for conn in list(ctx.live):
            if conn.conn is not None:
                conn.conn.close()
        await asyncio.sleep(0.2)  # let sessions record their end
        ctx.audit("shutdown", live_connections=len(ctx.live))
        store.flush()
        store.close()


def run(settings: Settings) -> None:
    asyncio.run(serve(settings))
