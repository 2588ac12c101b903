"""`bastion audit`: export, verify, checkpoint, prune and the audit log."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import click

from bastion import config as config_mod
from bastion import storage
from bastion.cli.support import config_option, config_path_option, fail, open_store, shown, to_json
from bastion.storage import Store


@click.group()
def audit() -> None:
    """The evidence: exports and the audit log."""


@audit.command("export")
@config_option
@click.argument("session_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["asciicast", "text", "jsonl", "bundle"]),
    default="asciicast",
    show_default=True,
    help="bundle: one self-contained, verifiable evidence file.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="File to write (default: stdout).")
def audit_export(settings: config_mod.Settings, session_id: str, fmt: str, output: str | None) -> None:
    """Export one session's recording (asciicast plays in `asciinema play`)."""
    from bastion.audit.export import render

    store = open_store(settings)
    try:
        session = store.session(session_id)
        if session is None:
            fail(f"no session {session_id!r}; see: bastion sessions list")
            return
        if fmt == "bundle":
            text = _bundle(settings, store, session.id)
        else:
            text = render(fmt, session, store.events(session.id))
    finally:
        store.close()
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


def _bundle(settings: config_mod.Settings, store: Store, session_id: str) -> str:
    from bastion.audit.bundle import BundleError, export_bundle
    from bastion.audit.seal import Sealer

    sealer = Sealer.from_state_dir(settings.server.state_dir, settings.recording.log_origin)
    store.checkpoint(sealer.origin, sealer.private).result()  # so that a checkpoint covers the seal
    try:
        bundle = export_bundle(store, session_id, sealer.private.public_key(), sealer.origin)
    except BundleError as exc:
        fail(str(exc))
        raise
    return to_json(bundle, indent=1, sort_keys=True) + "\n"


@audit.command("verify")
@config_path_option("Configuration file (for the database, the key and the origin).")
@click.option("--session", "session_id", default=None, help="Only this session (default: everything).")
@click.option("--all", "check_all", is_flag=True, help="Every session, the audit log and its checkpoints (default).")
@click.option(
    "--pubkey",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Audit public key (default: <state_dir>/audit.pub).",
)
@click.option(
    "--database",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A copy of the database to verify (no configuration needed).",
)
@click.option(
    "--checkpoint",
    "checkpoint_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A checkpoint kept elsewhere (bastion audit checkpoint); detects a rolled-back log.",
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Verify an evidence bundle instead of a database.",
)
@click.option("--origin", default=None, help="Log origin (default: [recording] log_origin).")
@click.option("--json", "as_json", is_flag=True)
def audit_verify(
    config_path: str | None,
    session_id: str | None,
    check_all: bool,
    pubkey: str | None,
    database: str | None,
    checkpoint_files: tuple[str, ...],
    bundle: str | None,
    origin: str | None,
    as_json: bool,
) -> None:
    """Verify recordings, seals and checkpoints offline; exit 0 only if everything verifies."""
    from bastion.audit.bundle import verify_bundle
    from bastion.audit.seal import DEFAULT_ORIGIN, load_public_key
    from bastion.audit.verify import verify_store

    public = None
    if pubkey:
        try:
            public = load_public_key(Path(pubkey))
        except (OSError, ValueError) as exc:
            fail(f"--pubkey: {exc}")
    if bundle:
        try:
            # The bundle is a file from elsewhere: what it says about itself is shown through the sanitiser.
            click.echo("verified: " + shown(verify_bundle(json.loads(Path(bundle).read_text()), public)))
        except Exception as exc:  # a file from elsewhere: whatever is wrong with it is one line, never a traceback
            fail(f"{bundle}: FAILED: {exc.__class__.__name__ if not str(exc) else exc}")
        return
    settings = None
    if database is None or public is None or config_path is not None:
        # An auditor with a copy of the database and the public key needs no configuration.
        try:
            settings = config_mod.load(config_path)
        except config_mod.ConfigError as exc:
            fail(str(exc))
    db_path = Path(database) if database else settings.server.database_path  # type: ignore[union-attr]
    if public is None:
        public = load_public_key(settings.server.state_dir / "audit.pub")  # type: ignore[union-attr]
    origin = origin or (settings.recording.log_origin if settings else DEFAULT_ORIGIN)
    external = [Path(f).read_text() for f in checkpoint_files]
    store = storage.open_store(db_path)
    try:
        report = verify_store(store, public, origin, session_id, external)
    finally:
        store.close()
    if as_json:
        click.echo(to_json(dataclasses.asdict(report) | {"ok": report.ok}, indent=2))
    else:
        # Problems and notes quote what the database holds (ids, types, metadata), and the database
        # under verification may be a tampered copy: each line is shown through the sanitiser.
        for note in report.notes:
            click.echo(f"note: {shown(note)}")
        scope = (
            f"session {session_id}"
            if session_id
            else (
                f"{report.sessions} sessions, {report.events} events, {report.log_entries} audit-log entries, "
                f"{report.checkpoints} checkpoints"
            )
        )
        if report.ok:
            click.echo(f"verified: {shown(scope)}")
        else:
            click.echo(f"FAILED: {shown(report.problems[0])}", err=True)
            for problem in report.problems[1:]:
                click.echo(f"also: {shown(problem)}", err=True)
    sys.exit(0 if report.ok else 1)


@audit.command("checkpoint")
@config_option
def audit_checkpoint(settings: config_mod.Settings) -> None:
    """Sign a checkpoint of the audit log now and print it (keep it elsewhere: it pins the log)."""
    from bastion.audit.seal import Sealer

    sealer = Sealer.from_state_dir(settings.server.state_dir, settings.recording.log_origin)
    store = open_store(settings)
    try:
        store.checkpoint(sealer.origin, sealer.private).result()
        points = store.checkpoints()
    finally:
        store.close()
    if not points:
        fail("the audit log is empty; nothing to checkpoint")
    click.echo(points[-1]["note"], nl=False)


@audit.command("prune")
@config_option
@click.option("--older-than", default=None, help="Age, e.g. 90d (default: [recording] retention).")
def audit_prune(settings: config_mod.Settings, older_than: str | None) -> None:
    """Replace old sessions' events with signed tombstones (audited); seals and the log stay."""
    from bastion.audit.retention import prune
    from bastion.audit.seal import Sealer

    try:
        age = config_mod.parse_duration(older_than) if older_than else settings.recording.retention
    except ValueError as exc:
        fail(f"--older-than: {exc}")
    if age is None:
        fail("no [recording] retention configured; pass --older-than AGE")
    sealer = Sealer.from_state_dir(settings.server.state_dir, settings.recording.log_origin)
    store = open_store(settings)
    try:
        pruned = prune(store, sealer, age)  # type: ignore[arg-type]
    finally:
        store.close()
    click.echo(f"pruned {len(pruned)} sessions" + (": " + shown(", ".join(pruned)) if pruned else ""))


@audit.command("log")
@config_option
@click.option("--type", "type_", default=None, help="Only events of this type, e.g. auth.failed.")
@click.option("--json", "as_json", is_flag=True)
def audit_log(settings: config_mod.Settings, type_: str | None, as_json: bool) -> None:
    """Show the global audit log: logins, refusals, issuances."""
    store = open_store(settings)
    try:
        rows = store.audit_log(type_)
    finally:
        store.close()
    for row in rows:
        if as_json:
            # JSON escapes every control character; the leaf hash is bytes, shown as hex.
            click.echo(to_json(row, sort_keys=True))
        else:
            # One line per entry: fields are text users chose (commands, names, reasons), each shown
            # through the sanitiser, so a newline cannot start a new row nor an escape drive the terminal.
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"]))
            fields = " ".join(f"{shown(k)}={shown(_field_text(v))}" for k, v in row["fields"].items())
            click.echo(f"{row['seq']:>6} {when} {shown(row['type']):<16} {fields}")


def _field_text(value: object) -> str:
    """A field of an audit-log entry as text: strings as they are, lists and objects as JSON."""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
