"""`bastion serve`: open the store, listen, checkpoint the audit log, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from bastion.audit import retention
from bastion.audit.recording import close_interrupted
from bastion.audit.seal import Sealer
from bastion.config import Settings
from bastion.control.approval_queue import Approvals
from bastion.control.grant_key import GrantKey
from bastion.control.policy import Policy
from bastion.identity.ca import Authorities
from bastion.identity.oidc import TokenVerifier
from bastion.logs import log
from bastion.masking.masker import Masker
from bastion.ssh import server
from bastion.ssh.context import BastionContext
from bastion.storage import open_store

PRUNE_INTERVAL = 3600.0
REVOCATION_POLL = 1.0
REVOCATION_OVERLAP = 30.0
EXPIRY_POLL = 5.0


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    store = open_store(settings.server.database_path, settings.recording.flush_interval)
    sealer = Sealer.from_state_dir(settings.server.state_dir, settings.recording.log_origin)
    ctx = BastionContext(
        settings,
        Authorities(settings.server.state_dir),
        store,
        sealer,
        verifier=TokenVerifier(settings.identity),
        policy=Policy(settings.rules, settings.policy.opaque, settings.approvals.approver_groups),
        approvals=Approvals(store, settings.approvals, grant_key=GrantKey.load(settings.server.state_dir)),
        masker=Masker.from_settings(settings.masking),
    )
    interrupted = close_interrupted(store, sealer)
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
    tasks = [
        asyncio.create_task(_checkpoints(ctx, stop)),
        asyncio.create_task(_retention(ctx, stop)),
        asyncio.create_task(_revocations(ctx, stop)),
        asyncio.create_task(_expiries(ctx, stop)),
    ]
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        listener.close()
        for conn in list(ctx.live):
            if conn.conn is not None:
                conn.conn.close()
        await asyncio.sleep(0.2)  # let sessions record their end and seal
        ctx.audit("shutdown", live_connections=len(ctx.live))
        await asyncio.gather(*tasks, return_exceptions=True)
        store.flush()  # every seal is in the log before the last checkpoint signs it
        store.checkpoint(sealer.origin, sealer.private).result()
        store.close()


async def _checkpoints(ctx: BastionContext, stop: asyncio.Event) -> None:
    """Every interval: enter live sessions' chain heads in the log, then sign a checkpoint if it grew."""
    interval = ctx.settings.recording.checkpoint_interval
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        for recording in list(ctx.recordings):
            if recording.closed:
                ctx.recordings.discard(recording)
            elif recording.seq:
                recording.flush()  # so that the chain head covers every counted event
                _log_progress(ctx, recording.id, recording.seq)
        if not stop.is_set():
            ctx.store.checkpoint(ctx.sealer.origin, ctx.sealer.private)


def _log_progress(ctx: BastionContext, session_id: str, events: int) -> None:
    ctx.store.chain_head(session_id).add_done_callback(
        lambda head: ctx.store.log("session.progress", session=session_id, events=events, head=head.result().hex())
    )


async def _revocations(ctx: BastionContext, stop: asyncio.Event) -> None:
    """Revocations take effect at the next authentication; this ends the live sessions too (within 1 s).

    Polls with an overlap (REVOCATION_OVERLAP) and remembers what it enforced, so revocations
    committed out of timestamp order by concurrent `cert revoke` runs are not missed.
    """
    since, enforced = time.time() - REVOCATION_OVERLAP, set[int]()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=REVOCATION_POLL)
        try:
            revoked = await asyncio.to_thread(ctx.store.revoked_since, since - REVOCATION_OVERLAP)
            serials = {int(r["serial"]) for r in revoked} - enforced
            if revoked:
                since = max(since, max(r["revoked_at"] for r in revoked))
            if not serials:
                continue
            enforced |= serials
            ended = ctx.end_sessions_of(serials, "session ended: certificate revoked")
            ctx.audit("cert.revocation_enforced", serials=sorted(serials), sessions_ended=ended)
        except Exception as exc:  # the watcher must outlive a busy database
            log("internal.error", where="revocations", error=repr(exc))


async def _expiries(ctx: BastionContext, stop: asyncio.Event) -> None:
    """Approval requests past their time expire (as denied) even when nobody is waiting on them."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=EXPIRY_POLL)
        await asyncio.to_thread(ctx.approvals.expire_due)


async def _retention(ctx: BastionContext, stop: asyncio.Event) -> None:
    if ctx.settings.recording.retention is None:
        return
    while not stop.is_set():
        await asyncio.to_thread(retention.prune, ctx.store, ctx.sealer, ctx.settings.recording.retention)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=PRUNE_INTERVAL)


def run(settings: Settings) -> None:
    asyncio.run(serve(settings))
