"""Policy and approvals end to end: the real ssh client, the bastion, Debian's sshd as the target.

Approvers decide from other processes: `bastion approvals` on the bastion host (the operator) and
`ssh bastion approve ID` with their own certificates.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.demo.targets import free_port
from tests.conftest import BastionEnv, running_env, wait_until
from tests.test_interactive_e2e import Terminal

pytestmark = pytest.mark.e2e

DENIED = 77
FORWARD_OK = free_port()
FORWARD_DENIED = free_port()
FORWARD_HELD = free_port()

RULES = f"""
[approvals]
timeout = "8s"
approver_groups = ["ops"]

[[rules]]
name = "dev-works"
effect = "allow"
groups = ["dev"]

[[rules]]
name = "no-touching"
effect = "deny"
exec = ["touch *", "rm *"]
message = "files stay as they are"

[[rules]]
name = "held"
effect = "approve"
exec = ["echo held*"]
approvers = ["ops"]

[[rules]]
name = "two-person"
effect = "approve"
exec = ["echo deploy*"]
approvers = ["ops"]
approvals = 2

[[rules]]
name = "granted"
effect = "approve"
exec = ["echo granted*"]
approvers = ["ops"]
grant = "1m"

[[rules]]
name = "not-pinned"
effect = "deny"
hosts = ["pinned-host"]
message = "that host is closed"

[[rules]]
name = "forward-ok"
effect = "allow"
forward = [{FORWARD_OK}]

[[rules]]
name = "forward-no"
effect = "deny"
forward = [{FORWARD_DENIED}]

[[rules]]
name = "forward-held"
effect = "approve"
forward = [{FORWARD_HELD}]
approvers = ["ops"]
"""


@pytest.fixture(scope="module")
def penv() -> Iterator[BastionEnv]:
    with running_env(RULES) as environment:
        yield environment


@pytest.fixture(scope="module")
def approver(penv: BastionEnv) -> dict[str, Path]:
    """ssh configs for bob and carol (group ops), and amy (groups dev and ops)."""
    configs = {}
    for user, groups in (("bob", ("ops",)), ("carol", ("ops",)), ("amy", ("dev", "ops"))):
        key = penv.issue(user, user, *(arg for g in groups for arg in ("--group", g)))
        config = penv.root / f"{user}_ssh_config"
        config.write_text(penv.ssh_config.read_text().replace(str(penv.user_key), str(key)))
        configs[user] = config
    return configs


def as_user(penv: BastionEnv, config: Path, user: str, *command: str, jump: bool = False, **kw: object) -> list[str]:
    destination = [f"-J{user}@bastion", f"{penv.login}@mcp-host"] if jump else [f"{user}@bastion"]
    return ["ssh", "-F", str(config), *destination, *command]


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


_clients: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _clients_end_with_their_test() -> Iterator[None]:
    """An ssh client a test started and did not see to the end (it failed first) is killed and reaped."""
    yield
    while _clients:
        client = _clients.pop()
        if client.poll() is None:
            client.kill()
        for stream in (client.stdout, client.stderr):
            if stream is not None:
                stream.close()
        client.wait(timeout=10)


def popen(args: list[str]) -> subprocess.Popen[str]:
    client = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _clients.append(client)
    return client


def start(penv: BastionEnv, command: str, config: Path | None = None, user: str = "alice") -> subprocess.Popen[str]:
    return popen(
        ["ssh", "-F", str(config or penv.ssh_config), "-J", f"{user}@bastion", f"{penv.login}@mcp-host", command]
    )


def requests(penv: BastionEnv, everything: bool = False) -> list[dict[str, Any]]:
    """The approval requests as the operator sees them: pending ones, or all of them."""
    rows: list[dict[str, Any]] = json.loads(
        penv.bastion("approvals", "list", *(["--all"] if everything else []), "--json").stdout
    )
    return rows


def pending(penv: BastionEnv, text: str, timeout: float = 10) -> int:
    """The id of the pending request whose action is `text` (as the operator sees it), once there is one."""

    def request_id() -> int | None:
        return next((int(row["id"]) for row in requests(penv) if row["action"] == text), None)

    return wait_until(request_id, f"a pending request for {text!r}", timeout=timeout, interval=0.2)


def wait_for_status(penv: BastionEnv, ids: set[int], status: str) -> None:
    """Until every request in `ids` has this status (withdrawn, expired...)."""
    wait_until(
        lambda: {row["status"] for row in requests(penv, everything=True) if row["id"] in ids} == {status},
        f"requests {sorted(ids)} to be {status}",
        interval=0.2,
    )


def test_denied_exec_leaves_the_target_untouched(penv: BastionEnv) -> None:
    path = Path(f"/tmp/bastion-denied-{uuid.uuid4().hex}")
    result = penv.ssh(f"touch {path}")
    assert result.returncode == DENIED
    assert result.stderr == b"bastion: denied by rule no-touching: files stay as they are\n"
    assert not path.exists()
    session = penv.store().session(penv.latest_session(f"touch {path}"))
    assert session is not None and session.exit_status == DENIED
    decisions = [e.fields() for e in penv.store().events(session.id) if e.type == "decision"]
    assert decisions == [
        {"action": "exec", "text": f"touch {path}", "effect": "deny", "rule": "no-touching",
         "matched": ["dev-works", "no-touching"], "message": "files stay as they are"}
    ]  # fmt: skip


def test_a_compound_command_with_a_denied_part_is_denied(penv: BastionEnv) -> None:
    path = Path(f"/tmp/bastion-denied-{uuid.uuid4().hex}")
    result = penv.ssh(f"echo hi; touch {path}")
    assert result.returncode == DENIED and b"no-touching" in result.stderr
    assert not path.exists()


def test_reaching_a_host_a_rule_closes_is_refused_with_the_rule(penv: BastionEnv) -> None:
    result = penv.ssh("true", host="pinned-host")
    assert result.returncode == 255
    assert b"denied by rule not-pinned: that host is closed" in result.stderr


def test_a_user_no_rule_allows_is_refused_by_default(penv: BastionEnv, approver: dict[str, Path]) -> None:
    # bob may reach the host (the forward rules name no users), but no rule allows his command.
    result = run(as_user(penv, approver["bob"], "bob", "true", jump=True))
    assert result.returncode == DENIED and result.stderr == "bastion: denied: no rule allows this\n"


def test_held_exec_runs_after_the_operator_approves_from_another_process(penv: BastionEnv) -> None:
    args = ["ssh", "-F", str(penv.ssh_config), "-o", 'SetEnv=BASTION_REASON="ticket 42"', "-J", "bastion",
            f"{penv.login}@mcp-host", "echo held-1 ran"]  # fmt: skip
    process = popen(args)
    request = pending(penv, "echo held-1 ran")
    listed = json.loads(penv.bastion("approvals", "list", "--json").stdout)
    assert next(r for r in listed if r["id"] == request)["reason"] == "ticket 42"
    approved = penv.bastion("approvals", "approve", str(request), "--reason", "fine")
    assert approved.returncode == 0
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and out == "held-1 ran\n"
    assert f"bastion: waiting for approval (request {request}, rule held)..." in err


def test_approver_over_ssh_with_their_certificate(penv: BastionEnv, approver: dict[str, Path]) -> None:
    process = start(penv, "echo held-2 ran")
    request = pending(penv, "echo held-2 ran")
    listing = run(as_user(penv, approver["bob"], "bob", "approvals", "list"))
    assert listing.returncode == 0 and "echo held-2 ran" in listing.stdout and "alice" in listing.stdout
    decided = run(as_user(penv, approver["bob"], "bob", "approve", str(request)))
    assert decided.returncode == 0, decided.stderr
    out, _ = process.communicate(timeout=30)
    assert out == "held-2 ran\n"
    votes = penv.logged("approval.approve", lambda f: f["id"] == request)
    assert votes[-1]["approver"] == "bob"


def test_nobody_approves_their_own_request(penv: BastionEnv, approver: dict[str, Path]) -> None:
    process = start(penv, "echo held-3 ran", approver["amy"], "amy")
    request = pending(penv, "echo held-3 ran")
    own = run(as_user(penv, approver["amy"], "amy", "approve", str(request)))
    assert own.returncode == 1 and "own" in own.stderr
    no_reason = run(as_user(penv, approver["bob"], "bob", "deny", str(request)))
    assert no_reason.returncode != 0 and "reason" in no_reason.stderr
    denied = run(as_user(penv, approver["bob"], "bob", "deny", str(request), "--reason", "not today"))
    assert denied.returncode == 0, denied.stderr
    out, err = process.communicate(timeout=30)
    assert process.returncode == DENIED and out == ""
    assert f"request {request} denied by bob: not today" in err


def test_two_approvals_from_different_people(penv: BastionEnv, approver: dict[str, Path]) -> None:
    process = start(penv, "echo deploy-1 ran")
    request = pending(penv, "echo deploy-1 ran")
    assert run(as_user(penv, approver["bob"], "bob", "approve", str(request))).returncode == 0
    twice = run(as_user(penv, approver["bob"], "bob", "approve", str(request)))
    assert twice.returncode == 1 and "already" in twice.stderr
    # bob's vote is committed (his command answered after it): one approval of two leaves it pending.
    (row,) = [r for r in requests(penv) if r["id"] == request]
    assert row["status"] == "pending" and row["approvals"] == "1/2"
    vote = penv.logged("approval.approve", lambda f: f["id"] == request)[-1]
    assert (vote["approver"], vote["status"]) == ("bob", "pending")
    assert process.poll() is None
    assert run(as_user(penv, approver["carol"], "carol", "approve", str(request))).returncode == 0
    out, _ = process.communicate(timeout=30)
    assert out == "deploy-1 ran\n"


def test_an_undecided_request_expires_as_denied(penv: BastionEnv) -> None:
    result = penv.ssh("echo held-expire ran", timeout=60)
    assert result.returncode == DENIED and result.stdout == b""
    assert b"expired" in result.stderr
    (row,) = [r for r in requests(penv, everything=True) if r["action"] == "echo held-expire ran"]
    # Expired by the [approvals] timeout (8s), on the bastion's own clock, and not before it.
    assert row["status"] == "expired" and row["expires"] - row["created"] == pytest.approx(8)
    assert row["waited"] >= 8 and row["votes"] == []
    assert penv.logged("approval.expire", lambda f: f["id"] == row["id"])


def test_a_grant_window_lets_the_same_command_pass_again(penv: BastionEnv) -> None:
    process = start(penv, "echo granted-1")
    penv.bastion("approvals", "approve", str(pending(penv, "echo granted-1")))
    assert process.communicate(timeout=30)[0] == "granted-1\n"
    again = penv.ssh("echo granted-1", timeout=20)
    assert again.returncode == 0 and again.stdout == b"granted-1\n" and b"waiting" not in again.stderr
    other = start(penv, "echo granted-2")
    pending(penv, "echo granted-2")  # a different command is not covered
    other.kill()
    other.communicate(timeout=10)


def test_a_requester_who_disconnects_withdraws_the_request(penv: BastionEnv) -> None:
    process = start(penv, "echo held-gone")
    request = pending(penv, "echo held-gone")
    process.kill()
    process.communicate(timeout=10)
    wait_for_status(penv, {request}, "withdrawn")


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello from the target")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def target_web() -> Iterator[None]:
    ports = (FORWARD_OK, FORWARD_DENIED, FORWARD_HELD)
    servers = [http.server.HTTPServer(("127.0.0.1", port), _Hello) for port in ports]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield
    for server in servers:
        server.shutdown()
        server.server_close()


def test_forwards_are_decided_per_port(penv: BastionEnv, target_web: None) -> None:
    local_ok, local_denied = free_port(), free_port()
    command = [
        "ssh", "-F", str(penv.ssh_config), "-N", "-o", "ExitOnForwardFailure=yes",
        "-L", f"{local_ok}:localhost:{FORWARD_OK}", "-L", f"{local_denied}:localhost:{FORWARD_DENIED}",
        "-J", "bastion", f"{penv.login}@mcp-host",
    ]  # fmt: skip
    tunnel = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:

        def fetched() -> bytes | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local_ok}/", timeout=5) as response:
                    return bytes(response.read())
            except OSError:  # the tunnel is not up yet
                return None

        body = wait_until(fetched, "the allowed forward to answer", timeout=15, interval=0.2)
        assert body == b"hello from the target"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{local_denied}/", timeout=5).read()
    finally:
        tunnel.terminate()
        tunnel.communicate(timeout=10)
    refused = penv.logged("forward.refused", lambda f: f["destination"] == f"localhost:{FORWARD_DENIED}")
    assert "denied by rule forward-no" in refused[-1]["reason"]


def held_tunnel(penv: BastionEnv, local: int) -> subprocess.Popen[bytes]:
    command = ["ssh", "-F", str(penv.ssh_config), "-N", "-L", f"{local}:localhost:{FORWARD_HELD}",
               "-J", "bastion", f"{penv.login}@mcp-host"]  # fmt: skip
    tunnel = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:  # not probed with a connection: that would open a held channel of its own
        wait_until(lambda: listening(local), f"the tunnel to listen on port {local}", timeout=15, interval=0.2)
    except BaseException:
        tunnel.kill()
        tunnel.communicate(timeout=10)
        raise
    return tunnel


def listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def test_a_held_forward_connects_after_approval(penv: BastionEnv, target_web: None) -> None:
    local = free_port()
    tunnel = held_tunnel(penv, local)
    try:
        answer: list[bytes] = []
        fetch = threading.Thread(
            target=lambda: answer.append(urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=30).read())
        )
        fetch.start()
        request = pending(penv, f"port {FORWARD_HELD}")
        assert penv.bastion("approvals", "approve", str(request)).returncode == 0
        fetch.join(timeout=30)
        assert answer == [b"hello from the target"]
    finally:
        tunnel.terminate()
        tunnel.communicate(timeout=10)


def test_a_held_forward_is_withdrawn_when_the_client_leaves(penv: BastionEnv, target_web: None) -> None:
    local = free_port()
    tunnel = held_tunnel(penv, local)
    waiting = socket.create_connection(("127.0.0.1", local), timeout=5)
    try:
        ids = {pending(penv, f"port {FORWARD_HELD}")}
        tunnel.kill()
        tunnel.wait(timeout=10)
        wait_for_status(penv, ids, "withdrawn")
    finally:
        waiting.close()
        tunnel.kill()
        tunnel.communicate(timeout=10)


def test_a_forward_to_another_machine_is_refused(penv: BastionEnv) -> None:
    result = subprocess.run(
        ["ssh", "-F", str(penv.ssh_config), "-W", f"10.1.2.3:{FORWARD_OK}", "-J", "bastion", f"{penv.login}@mcp-host"],
        capture_output=True,
        timeout=30,
        input=b"",
    )
    assert result.returncode != 0 and b"reach only its own ports" in result.stderr


def test_policy_test_command(penv: BastionEnv) -> None:
    result = penv.bastion(
        "policy", "test", "--user", "alice", "--group", "dev", "--host", "mcp-host", "--login", penv.login,
        "--exec", "rm -rf /tmp/x", "--json",
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["effect"] == "deny" and report["rule"] == "no-touching"
    assert set(report["matched"]) >= {"dev-works", "no-touching"}


@pytest.fixture
def shell(penv: BastionEnv) -> Iterator[Terminal]:
    term = Terminal(penv)
    try:
        term.wait_for(r"[$#]\s*$")
        yield term
    finally:
        term.close()


def test_a_denied_shell_line_is_cleared_and_the_shell_goes_on(penv: BastionEnv, shell: Terminal) -> None:
    path = Path(f"/tmp/bastion-denied-{uuid.uuid4().hex}")
    shell.keys("-l", f"touch {path}")
    shell.keys("Enter")
    shell.wait_for(r"^bastion: denied by rule no-touching: files stay as they are")
    shell.line("echo still=$((40+2))")
    shell.wait_for(r"^still=42")  # the shell runs lines in order: had the touch gone through, it is done now
    assert not path.exists()


def test_an_edited_line_is_decided_as_the_screen_shows_it(penv: BastionEnv, shell: Terminal) -> None:
    path = Path(f"/tmp/bastion-denied-{uuid.uuid4().hex}")
    shell.keys("-l", f"ls {path}")
    shell.keys("C-a", "Delete", "Delete")  # "ls X" becomes "touch X" before Enter
    shell.keys("-l", "touch")
    shell.keys("Enter")
    shell.wait_for(r"^bastion: denied by rule no-touching")
    shell.line("echo after=$((40+2))")
    shell.wait_for(r"^after=42")  # the shell runs lines in order: had the touch gone through, it is done now
    assert not path.exists()


def test_a_held_shell_line_runs_after_approval(penv: BastionEnv, shell: Terminal) -> None:
    shell.line("echo held-shell ran")
    screen = shell.wait_for(r"^bastion: waiting for approval \(request \d+, rule held\)")
    request = int(re.search(r"request (\d+)", screen).group(1))  # type: ignore[union-attr]
    penv.bastion("approvals", "approve", str(request))
    shell.wait_for(r"^held-shell ran$")
    shell.line("echo after=ok")
    shell.wait_for(r"^after=ok")


def test_a_shell_without_a_pty_has_each_input_line_decided(penv: BastionEnv) -> None:
    path = Path(f"/tmp/bastion-denied-{uuid.uuid4().hex}")
    script = f"echo first\ntouch {path}\necho last\n".encode()
    result = subprocess.run(
        ["ssh", "-T", "-F", str(penv.ssh_config), "-J", "bastion", f"{penv.login}@mcp-host"],
        input=script,
        capture_output=True,
        timeout=60,
    )
    assert result.stdout.endswith(b"first\nlast\n")  # after the target's message of the day
    assert b"bastion: denied by rule no-touching" in result.stderr
    assert not path.exists()


def test_exec_of_a_shell_is_a_shell_whose_lines_are_decided(penv: BastionEnv) -> None:
    path = Path(f"/tmp/bastion-denied-{uuid.uuid4().hex}")
    result = penv.ssh("bash", input=f"echo in-bash\ntouch {path}\n".encode())
    assert result.stdout == b"in-bash\n" and b"no-touching" in result.stderr
    assert not path.exists()
