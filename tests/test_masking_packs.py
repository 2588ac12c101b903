"""The packs' detectors on the shapes a review found leaking: indented and escaped key blocks, long
JWTs, URL passwords with `@`, and the shell's PWD and OLDPWD (which are not passwords)."""

from __future__ import annotations

import random

import pytest

from bastion.masking.packs import BLOCK_STEP
from tests.masking_support import BRUTE_FORCE, MASKER, MASKERS, feed_in_pieces


def masked(text: str) -> str:
    return MASKER.mask_text(text)


def assert_chunk_independent(text: str, byte_by_byte: bool = True, splits: int = 5) -> None:
    """Fed byte by byte and in random pieces, with either prefilter or none, as masked whole."""
    data = text.encode()
    whole = MASKER.mask(data)[0]
    assert BRUTE_FORCE.mask(data)[0] == whole  # every match starts at an anchor of its family
    rng = random.Random(data)
    for masker in MASKERS:
        assert masker.mask(data)[0] == whole
        if byte_by_byte:
            assert feed_in_pieces(masker, data, list(range(1, len(data))))[0] == whole
        for _ in range(splits):
            cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randint(1, 40))]
            out, _, most_held = feed_in_pieces(masker, data, cuts)
            assert out == whole, cuts
            assert most_held <= masker.longest_hold


# Private key blocks: indented, with trailing blanks, with `\/` ------------------------------------

BODY = ["MIIEowIBAAKCAQEAx0QnVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKf", "BstIs+bMY2Zkp18gnTxK/AbC+12=="]


def key_block(indent: str = "", trailing: str = "", newline: str = "\n", kind: str = "RSA PRIVATE KEY") -> str:
    lines = [f"-----BEGIN {kind}-----", *BODY, f"-----END {kind}-----"]
    return "".join(
        indent + line + (trailing if index < len(lines) - 1 else "") + newline for index, line in enumerate(lines)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a Kubernetes secret or Helm values: the block is indented under its key
        (
            "tls.key: |\n" + key_block(indent="    ") + "tls.crt: x\n",
            "tls.key: |\n    [masked:private-key]\ntls.crt: x\n",
        ),
        ("data:\n" + key_block(indent="\t\t") + "$ ", "data:\n\t\t[masked:private-key]\n$ "),
        (key_block(trailing=" "), "[masked:private-key]\n"),  # a space after the BEGIN line and each body line
        (key_block(trailing=" \t "), "[masked:private-key]\n"),
        (key_block(indent="  ", trailing="  ", newline="\r\n"), "  [masked:private-key]\r\n"),
        # the body indented, the BEGIN and END lines not (a heredoc pasted from an indented file)
        (
            "-----BEGIN PRIVATE KEY-----\n  " + "\n  ".join(BODY) + "\n-----END PRIVATE KEY-----\nok\n",
            "[masked:private-key]\nok\n",
        ),
        # encapsulated headers and the blank line after them, all indented, the blank line with blanks
        (
            "  -----BEGIN RSA PRIVATE KEY-----\n  Proc-Type: 4,ENCRYPTED\n  DEK-Info: AES-128-CBC,8C0D1B2D55E2C1A4\n"
            "   \n  " + BODY[0] + "\n  -----END RSA PRIVATE KEY-----\n$ ",
            "  [masked:private-key]\n$ ",
        ),
    ],
)
def test_indented_key_block_and_trailing_blanks_are_masked_whole(text: str, expected: str) -> None:
    assert masked(text) == expected
    assert all(line not in masked(text) for line in BODY)
    assert_chunk_independent(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # PHP's json_encode escapes every `/` as `\/`
        (
            '{"key": "' + key_block().replace("/", "\\/").replace("\n", "\\n") + '"}',
            '{"key": "[masked:private-key]\\n"}',
        ),
        # a body line that starts with `\/`, and one indented inside the string
        (
            '{"key": "-----BEGIN PRIVATE KEY-----\\n\\/AbCd+EfGh\\/\\/IjKl==\\n  \\/MnOp\\n'
            '-----END PRIVATE KEY-----\\n", "n": 1}',
            '{"key": "[masked:private-key]\\n", "n": 1}',
        ),
        (
            '{"key": "-----BEGIN PRIVATE KEY-----\\r\\nMIIE\\/ow \\r\\n    AbC\\/d\\r\\n-----END PRIVATE KEY-----"}',
            '{"key": "[masked:private-key]"}',
        ),
    ],
)
def test_key_block_in_json_with_escaped_slashes(text: str, expected: str) -> None:
    assert masked(text) == expected
    assert_chunk_independent(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a truncated block (head -3 key.pem) ends at the first line that is not base64, indented or not
        (
            "  -----BEGIN PRIVATE KEY-----\n  MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n  $ echo done\ndone\n",
            "  [masked:private-key]\n  $ echo done\ndone\n",
        ),
        (
            "-----BEGIN PRIVATE KEY-----  \nMIIEvQIBADAN \n\t# a comment\n",
            "[masked:private-key] \n\t# a comment\n",
        ),
        # the END line closes the block: indented text after it is shown
        (key_block(indent="  ") + "  AbCdEf\n", "  [masked:private-key]\n  AbCdEf\n"),
        # a JSON string's closing quote ends the block too
        ('["-----BEGIN PRIVATE KEY-----\\n  MIIEvQ\\/IBADAN", "next"]', '["[masked:private-key]", "next"]'),
    ],
)
def test_key_block_still_ends_at_the_end_line_or_the_first_line_not_base64(text: str, expected: str) -> None:
    assert masked(text) == expected
    assert_chunk_independent(text)


def test_indented_large_key_streams_with_bounded_memory() -> None:
    line = "    MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8c\\/j \t"
    raw = (
        "key: |\n    -----BEGIN PRIVATE KEY-----\n"
        + "\n".join([line] * 20_000)
        + "\n    -----END PRIVATE KEY-----\nok\n"
    )
    stream = MASKER.stream()
    out, most_held = [], 0
    for i in range(0, len(raw), 1000):
        out.append(stream.feed(raw[i : i + 1000].encode()))
        most_held = max(most_held, stream.held)
    out.append(stream.flush())
    assert b"".join(out) == b"key: |\n    [masked:private-key]\nok\n"
    assert most_held < 2000 and stream.counts == {"private-key": 1}
    assert BLOCK_STEP.reach < 1024  # every step is bounded, so the hold is too


# JWTs longer than their bounds ---------------------------------------------------------------------

HEADER = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9"
SIGNATURE = "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


def jwt(payload_length: int, header: str = HEADER) -> str:
    """A token whose payload is `eyJ` and then `payload_length` base64url characters."""
    rng = random.Random(payload_length)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return header + ".eyJ" + "".join(rng.choice(alphabet) for _ in range(payload_length)) + "." + SIGNATURE


@pytest.mark.parametrize("length", [8200, 12_000, 14_000])  # Azure AD and Keycloak tokens pass 8 KB
def test_long_jwt_is_masked_whole(length: int) -> None:
    token = jwt(length)
    assert masked(f"token {token} end") == "token [masked:jwt] end"
    assert masked(f'{{"id_token": "{token}", "x": 1}}') == '{"id_token": "[masked:jwt]", "x": 1}'


def test_long_jwt_after_bearer_is_masked_whole() -> None:
    token = jwt(12_000)  # the bearer detector starts first: its bound must hold a long JWT too
    assert masked(f"Authorization: Bearer {token}\r\n") == "Authorization: Bearer [masked:bearer-token]\r\n"
    assert_chunk_independent(f"Authorization: Bearer {token}\r\n", byte_by_byte=False)


def test_jwt_longer_than_its_bound_has_its_first_part_masked() -> None:
    token = jwt(20_000)
    cut = len(HEADER) + len(".eyJ") + 14_000
    assert masked(f"token {token} end") == f"token [masked:jwt]{token[cut:]} end"
    assert masked(f'"id_token": "{token}"') == f'"id_token": "[masked:jwt]{token[cut:]}"'
    long_header = "eyJ" + "x5cAbCdEf" * 200  # a certificate chain in the header
    header_token = jwt(100, header=long_header)
    assert masked(f"jws {header_token}") == f"jws [masked:jwt]{header_token[3 + 1024 :]}"


@pytest.mark.parametrize(
    "text",
    [
        "eyJhbGciOiJIUzI1NiJ9 alone",  # a JWT header, or any base64 of JSON, on its own
        "blob eyJ" + "a" * 1000 + " end",  # base64 JSON shorter than a header's bound
        f"{HEADER}.eyJzdWIi",  # a payload shorter than 8 characters
        f"{HEADER}.eyJ{'a' * 900}",  # no signature and its dot, and within the bound: not a token
    ],
)
def test_not_a_jwt(text: str) -> None:
    assert masked(text) == text


def test_long_jwts_are_chunk_independent() -> None:
    for length in (8200, 14_000, 14_001, 20_000):
        assert_chunk_independent(f'x "id_token": "{jwt(length)}"\n', byte_by_byte=False, splits=3)
    assert_chunk_independent(f"jws {jwt(100, header='eyJ' + 'x5c' * 400)} end", byte_by_byte=False)
    assert_chunk_independent(f"t {jwt(40)} end")


# URL passwords with `@` ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres://app:pa@ss@db/x", "postgres://app:[masked:url-password]@db/x"),
        ("mysql://root:p@ss:w@rd@127.0.0.1:3306/db", "mysql://root:[masked:url-password]@127.0.0.1:3306/db"),
        ("redis://:s3@cr3t@cache:6379/0", "redis://:[masked:url-password]@cache:6379/0"),
        ("amqp://guest:g@@st@rabbit", "amqp://guest:[masked:url-password]@rabbit"),
        ("https://u:p@ss@host?next=a@b", "https://u:[masked:url-password]@host?next=a@b"),
        ("https://u:p@ss@host/users/@bob", "https://u:[masked:url-password]@host/users/@bob"),
        ('DATABASE_URL="postgres://a:b@c@db:5432/x"', 'DATABASE_URL="postgres://a:[masked:url-password]@db:5432/x"'),
        ("ftp://u:pw@host and bob@example.com", "ftp://u:[masked:url-password]@host and [masked:email]"),
    ],
)
def test_url_password_runs_to_the_last_at_before_the_host(text: str, expected: str) -> None:
    assert masked(text) == expected
    assert_chunk_independent(text)


@pytest.mark.parametrize(
    "text",
    [
        "https://example.com:8080/users/@bob",  # `/` ends what could be a password: this is a path
        "http://localhost:5173/@vite/client",
        "https://example.com:443?mention=@bob",
        "https://example.com:443#@top",
        "ssh://deploy@build-host:2222/srv/repo.git",  # a user, no password
        "see http://host:80 @alice",
    ],
)
def test_url_without_a_password_is_left_alone(text: str) -> None:
    assert masked(text) == text
    assert_chunk_independent(text)


# PWD and OLDPWD are the shell's working directories -------------------------------------------------

ENV_OUTPUT = "SHELL=/bin/bash\nPWD=/home/bob/src\nLOGNAME=bob\nOLDPWD=/home/bob\nHOME=/home/bob\n"


@pytest.mark.parametrize(
    "text",
    [
        ENV_OUTPUT,
        "OLDPWD=/tmp\nPWD=/srv",  # at the very start of the output
        'declare -x OLDPWD="/home/bob"\ndeclare -x PWD="/home/bob/src"\n',  # export -p
        "export PWD=/home/bob\n\tOLDPWD=/var/log\n",
        "environ({'PWD': '/home/bob', 'OLDPWD': '/tmp'})",  # Python's os.environ
        "{\n  PWD: '/home/bob',\n  OLDPWD: '/tmp',\n}",  # Node's process.env
        '"Env": ["PATH=/usr/bin", "PWD=/app"]',  # docker inspect
    ],
)
def test_shell_pwd_and_oldpwd_are_not_passwords(text: str) -> None:
    assert masked(text) == text
    assert_chunk_independent(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DB_PWD=hunter22", "DB_PWD=[masked:password]"),
        ("pwd: hunter22", "pwd: [masked:password]"),
        ("MYSQL_PWD=s3cr3t mysql -u root", "MYSQL_PWD=[masked:password] mysql -u root"),
        ("Server=db;Uid=app;Pwd=s3cret;", "Server=db;Uid=app;Pwd=[masked:password];"),
        ("PWD=hunter22", "PWD=[masked:password]"),  # the shell's PWD is a path; this is not
        ("DB_OLDPWD=/s3cret", "DB_OLDPWD=[masked:password]"),  # not the shell's name
        ("MYPWD=/s3cret OLDPWDX=/s3cret", "MYPWD=[masked:password] OLDPWDX=/s3cret"),
        ("PWD=/home/bob DB_PWD=hunter22", "PWD=/home/bob DB_PWD=[masked:password]"),
        ("oldpwd: hunter22", "oldpwd: [masked:password]"),
        ('{"pwd": "/S3cret!"}', '{"pwd": "[masked:password]"}'),  # only the shell's names, in capitals
        ("--pwd=/S3cret db.pwd=/S3cret", "--pwd=[masked:password] db.pwd=[masked:password]"),
    ],
)
def test_pwd_keyword_is_still_a_password(text: str, expected: str) -> None:
    assert masked(text) == expected
    assert_chunk_independent(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password: it's-a-secret\n", "password: [masked:password]\n"),  # YAML, INI: an apostrophe inside
        ("DB_PASSWORD=it's\n", "DB_PASSWORD=[masked:password]\n"),
        ("WHERE password='x' AND", "WHERE password='[masked:password]' AND"),  # quoted: the quotes stay
        ("echo 'password=abc' done", "echo 'password=[masked:password] done"),  # a closing quote goes too
    ],
)
def test_a_bare_value_runs_past_an_apostrophe(text: str, expected: str) -> None:
    assert masked(text) == expected
    assert_chunk_independent(text)


KEY_LINES = [
    b"MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    b"VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
    b"kl5u+qKhbwKfBstIs+bMY2ZkpVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn18gnT",
]
SCROLL = b"\x1b[1;23r\x1b[23;1H\n\x1b[1;24r\x1b[23;1H"  # vim scrolling a line: region, position, LF, region


@pytest.mark.parametrize(
    "between",
    [
        [b"\x1b[2;1H", b"\x1b[3;1H", b"\x1b[4;1H"],  # a screen drawn line by line with positioning
        [b"\r\n\x1b[2;1H", b"\r\n\x1b[3;1H", b"\r\n"],
        [b"\r\n", b"\x1b7\x1b[1;24r\x1b8\r\n", b"\r\n"],  # save, scroll region, restore between lines
        [b"\r\n", SCROLL, SCROLL],
        [b"\x1bD\r", b"\x1bD\r", b"\x1bD\r"],  # index, carriage return
    ],
)
def test_a_key_block_drawn_with_cursor_moves_between_its_lines_is_dropped_whole(between: list[bytes]) -> None:
    raw = b"-----BEGIN RSA PRIVATE KEY-----" + b"".join(
        sep + line for sep, line in zip(between, KEY_LINES, strict=True)
    )
    raw += b"\r\n-----END RSA PRIVATE KEY-----\r\n$ "
    out = MASKER.mask(raw)[0]
    assert out.startswith(b"[masked:private-key]") and out.endswith(b"\r\n$ ")
    assert not any(line[:12] in out for line in KEY_LINES)
    stream = MASKER.stream()
    assert b"".join(stream.feed(raw[i : i + 7]) for i in range(0, len(raw), 7)) + stream.flush() == out


def test_a_cursor_move_along_a_key_line_does_not_end_the_block() -> None:
    line = KEY_LINES[0]
    raw = b"-----BEGIN RSA PRIVATE KEY-----\r\n" + line[:30] + b"\x1b[1C" + line[31:] + b"\r\n" + KEY_LINES[1]
    raw += b"\r\n-----END RSA PRIVATE KEY-----\r\n"
    assert MASKER.mask(raw)[0] == b"[masked:private-key]\x1b[1C\r\n"
