"""The masker: each detector, chunk independence, escape sequences, private key blocks, settings."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.masking.config import MaskingSettings, MaskPattern
from bastion.masking.masker import HELD_LIMIT, Masker
from bastion.masking.packs import iban_valid, luhn_valid
from bastion.masking.regex import UnsupportedPattern, analyse
from tests.masking_support import BRUTE_FORCE, MASKER, MASKERS, feed_in_pieces

GITHUB = "ghp_" + "A1b2C3d4" * 4 + "E5f6"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----\n"
)


def masked(text: str, masker: Masker = MASKER) -> str:
    return masker.mask_text(text)


# Each detector: true positives ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key AKIAIOSFODNN7EXAMPLE here", "key [masked:aws-key] here"),
        ("The docs use AKIAIOSFODNN7EXAMPLE as an example key.", "The docs use [masked:aws-key] as an example key."),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key = [masked:aws-secret]",
        ),
        ('"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', '"SecretAccessKey": "[masked:aws-secret]"'),
        (f"export GITHUB_TOKEN={GITHUB}\n", "export GITHUB_TOKEN=[masked:github-token]\n"),
        (
            "github_pat_11ABCDEFG0123456789abc_defghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU",
            "[masked:github-token]",
        ),
        ("glpat-xxxxXXXXxxxxXXXX1234 ok", "[masked:gitlab-token] ok"),
        ("token xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "token [masked:slack-token]"),
        (
            "url https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            "url https://hooks.slack.com/services/[masked:slack-webhook]",
        ),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe [masked:stripe-key]"),
        ("key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "key=[masked:google-api-key]"),
        ("ya29.a0AfH6SMBx3kQ7example_access_token_value", "[masked:google-token]"),
        ("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", "[masked:google-secret]"),
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer [masked:bearer-token]"),
        (f"id_token {JWT} end", "id_token [masked:jwt] end"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [masked:basic-auth]"),
        ("password=hunter2 user=bob", "password=[masked:password] user=bob"),
        ("DB_PASSWORD: 'c0rrect horse'", "DB_PASSWORD: '[masked:password]'"),
        ('{"password": "s3cr3t!", "x": 1}', '{"password": "[masked:password]", "x": 1}'),
        ("Server=db;User Id=app;Password=Pa55word;", "Server=db;User Id=app;Password=[masked:password];"),
        ('client_secret = "abc123def456"', 'client_secret = "[masked:secret]"'),
        ("API_KEY=0123456789abcdef", "API_KEY=[masked:secret]"),
        ("postgres://app:p4ssw0rd@db.internal:5432/app", "postgres://app:[masked:url-password]@db.internal:5432/app"),
        ("redis://:sekrit@cache:6379/0", "redis://:[masked:url-password]@cache:6379/0"),
        ("mail bob.smith+tag@example.co.uk.", "mail [masked:email]."),
        ("call +44 20 7946 0958 now", "call [masked:phone] now"),
        ("call (555) 234-5678 or 1-555-234-5678", "call [masked:phone] or [masked:phone]"),
        ("card 4111 1111 1111 1111 ok", "card [masked:card] ok"),
        ("card 4111-1111-1111-1111", "card [masked:card]"),
        ('"pan": "5555555555554444"', '"pan": "[masked:card]"'),
        ("amex 3782 822463 10005", "amex [masked:card]"),
        ("ssn 123-45-6789", "ssn [masked:ssn]"),
        ("iban DE89 3704 0044 0532 0130 00 end", "iban [masked:iban] end"),
        ("IBAN: GB82WEST12345698765432", "IBAN: [masked:iban]"),
    ],
)
def test_detector_masks(text: str, expected: str) -> None:
    assert masked(text) == expected


# ... and false positives ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112 shipped",  # 16 digits that fail Luhn
        "card 4111 1111 1111 1112",  # grouped, fails Luhn
        "ts=1709251200123 id=1234567890123456789",  # epoch millis, an id starting with 1
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",  # a git SHA-1 is not an AWS secret
        "uid 550e8400-e29b-41d4-a716-446655440000",
        "2024-03-15T10:23:45.123Z 10.0.0.1:8080 v1.2.3 123-4567",
        "@property\ndef name(self): ...\nuser@localhost",
        "password = get_password()",
        'password = os.environ["DB_PASSWORD"]',
        '{"token": null, "password": "", "secret": true}',
        "password: ${DB_PASSWORD} secret=$SECRET token=%s",
        "tokens = tokenize(source); max_tokens: 100; password_hash=abc",
        "Enter password: ",
        "ssn 000-12-3456 666-12-3456 912-34-5678 123-00-4567",
        "phone 123-456-7890 055-123-4567",  # area codes cannot start with 0 or 1
        "iban DE89 3704 0044 0532 0130 01",  # wrong check digits
        "AKIAIOSFODNN7EXAMPL",  # one character short
        "password=[masked:password]",  # already masked
    ],
)
def test_detector_leaves_alone(text: str) -> None:
    assert masked(text) == text


def test_checksums() -> None:
    assert luhn_valid(b"4111111111111111") and not luhn_valid(b"4111111111111112")
    assert iban_valid(b"DE89370400440532013000") and iban_valid(b"GB82 WEST 1234 5698 7654 32")
    assert not iban_valid(b"DE89370400440532013001") and not iban_valid(b"XX89370400440532013000")


def test_counts_by_kind_never_hold_the_secret() -> None:
    data = b"AKIAIOSFODNN7EXAMPLE and AKIAI44QH8DHBEXAMPLE, mail ana@example.com\n"
    out, counts = MASKER.mask(data)
    assert counts == {"aws-key": 2, "email": 1}
    assert b"EXAMPLE" not in out and b"ana@" not in out
    assert all(b"EXAMPLE" not in key.encode() for key in counts)


def test_mask_text_keeps_unicode_and_json_strings() -> None:
    assert masked("naïve café password=pässwörd ✓") == "naïve café password=[masked:password] ✓"
    assert masked("no secrets here — ünïcödé") == "no secrets here — ünïcödé"
    assert masked('{"lone": "\ud800", "password": "x"}') == '{"lone": "\ud800", "password": "[masked:password]"}'


# Terminal escape sequences -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"AKIA\x1b[31mIOSFODNN7EXAMPLE", b"[masked:aws-key]\x1b[31m"),
        (b"\x1b[1mAKIA\x1b[0mIOSFODNN7EXAMPLE\x1b[0m!", b"\x1b[1m[masked:aws-key]\x1b[0m\x1b[0m!"),
        # grep --color highlighting the middle of a secret
        (
            b"key=\x1b[01;31m\x1b[KAKIAIOSF\x1b[m\x1b[KODNN7EXAMPLE\n",
            b"key=\x1b[01;31m\x1b[K[masked:aws-key]\x1b[m\x1b[K\n",
        ),
        (b"bob\x1b]0;title\x07@example.com", b"[masked:email]\x1b]0;title\x07"),
        (b"pass\x1b(Bword=hunter2", b"pass\x1b(Bword=[masked:password]"),
    ],
)
def test_escape_sequences_inside_a_secret_do_not_let_it_through(raw: bytes, expected: bytes) -> None:
    out, _ = MASKER.mask(raw)
    assert out == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # vim draws lines with cursor positioning, not line breaks: the key and the token are two words
        (
            b"\x1b[1;1HAKIAIOSFODNN7EXAMPLE\x1b[2;21H\x1b[K\x1b[3;1Hghp_A1b2C3d4A1b2C3d4A1b2C3d4A1b2C3d4E5f6\x1b[4;1H",
            b"\x1b[1;1H[masked:aws-key]\x1b[2;21H\x1b[K\x1b[3;1H[masked:github-token]\x1b[4;1H",
        ),
        (b"USER\x1b[4CAKIAIOSFODNN7EXAMPLE", b"USER\x1b[4C[masked:aws-key]"),  # ncurses: cursor forward for spaces
        (b"card\x1b[3C4111 1111 1111 1111\x1b[5d", b"card\x1b[3C[masked:card]\x1b[5d"),
        (b"line one\x1bEAKIAIOSFODNN7EXAMPLE", b"line one\x1bE[masked:aws-key]"),  # ESC E: next line
        # a move inside a secret: the two parts are drawn in different places, neither is the secret
        (b"AKIAIOSF\x1b[2;1HODNN7EXAMPLE", b"AKIAIOSF\x1b[2;1HODNN7EXAMPLE"),
        # colours, erasing and cursor visibility do not move the cursor: still one word
        (b"AKIAIOSF\x1b[K\x1b[?25lODNN7EXAMPLE", b"[masked:aws-key]\x1b[K\x1b[?25l"),
        # a CSI with more parameter bytes than any program sends is still one sequence
        (b"k AKIA\x1b[" + b"0;" * 40 + b"1mIOSFODNN7EXAMPLE", b"k [masked:aws-key]\x1b[" + b"0;" * 40 + b"1m"),
    ],
)
def test_cursor_moves_separate_words_as_the_screen_does(raw: bytes, expected: bytes) -> None:
    assert MASKER.mask(raw)[0] == expected
    stream = MASKER.stream()
    assert b"".join(stream.feed(raw[i : i + 1]) for i in range(len(raw))) + stream.flush() == expected


def test_a_private_key_drawn_by_cursor_positioning_is_masked() -> None:
    body = [b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW", b"QyNTUxOQAAACDrVY"]
    raw = b"\x1b[1;1H-----BEGIN OPENSSH PRIVATE KEY-----\x1b[2;1H" + body[0] + b"\x1b[3;1H" + body[1]
    raw += b"\x1b[4;1H-----END OPENSSH PRIVATE KEY-----\x1b[5;1H~"
    out = MASKER.mask(raw)[0]
    assert all(part not in out for part in body) and out.startswith(b"\x1b[1;1H[masked:private-key]")
    assert out.endswith(b"\x1b[2;1H\x1b[3;1H\x1b[4;1H\x1b[5;1H~")


def test_escape_sequence_split_across_chunks_byte_by_byte() -> None:
    raw = b"$ cat creds\r\n\x1b[32mAKIA\x1b[0;1mIOSFODNN7\x1b[mEXAMPLE\x1b[0m\r\n$ "
    stream = MASKER.stream()
    out = b"".join(stream.feed(raw[i : i + 1]) for i in range(len(raw))) + stream.flush()
    assert out == MASKER.mask(raw)[0]
    assert b"IOSF" not in out and b"[masked:aws-key]" in out


def test_colours_around_masked_text_are_kept() -> None:
    raw = b"\x1b[31mpassword=hunter2\x1b[0m plain"
    assert MASKER.mask(raw)[0] == b"\x1b[31mpassword=[masked:password]\x1b[0m plain"


# Private key blocks ------------------------------------------------------------------------------


def test_private_key_block_becomes_one_token() -> None:
    assert masked(PEM + "after\n") == "[masked:private-key]\nafter\n"
    assert masked(PEM.replace("\n", "\r\n")) == "[masked:private-key]\r\n"


def test_private_key_in_a_json_string_with_escaped_newlines() -> None:
    text = '{"private_key": "' + PEM.replace("\n", "\\n") + '", "client_email": "x"}'
    assert masked(text) == '{"private_key": "[masked:private-key]\\n", "client_email": "x"}'


def test_openssh_and_encrypted_pem_blocks() -> None:
    openssh = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n"
        "-----END OPENSSH PRIVATE KEY-----"
    )
    legacy = (
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,8C0D1B2D55E2C1A4\n\n"
        "MIIEowIBAAKCAQEAx0Qn\n-----END RSA PRIVATE KEY-----\n$ "
    )
    assert masked(openssh) == "[masked:private-key]"
    assert masked(legacy) == "[masked:private-key]\n$ "


def test_truncated_key_block_ends_at_the_first_line_that_is_not_base64() -> None:
    text = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nMIIEvQIBADAN\n$ echo done\ndone\n"
    assert masked(text) == "[masked:private-key]\n$ echo done\ndone\n"


def test_large_key_streams_with_bounded_memory() -> None:
    body = "\n".join("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj" for _ in range(20_000))
    raw = ("-----BEGIN PRIVATE KEY-----\n" + body + "\n-----END PRIVATE KEY-----\nok\n").encode()
    stream = MASKER.stream()
    out, most_held = [], 0
    for i in range(0, len(raw), 1000):
        out.append(stream.feed(raw[i : i + 1000]))
        most_held = max(most_held, stream.held)
    out.append(stream.flush())
    assert len(raw) > 1_000_000 and most_held < 2000
    assert b"".join(out) == b"[masked:private-key]\nok\n"
    assert stream.counts == {"private-key": 1}


def test_key_block_stays_open_across_an_idle_flush() -> None:
    stream = MASKER.stream()
    first = stream.feed(b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n") + stream.flush()  # output pauses
    rest = stream.feed(b"BgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n") + stream.flush()
    assert first + rest == b"[masked:private-key]\n\n"
    assert b"Bgkq" not in rest


# Streaming: chunk independence, hold, delay ---------------------------------------------------------

FRAGMENTS = [
    "AKIAIOSFODNN7EXAMPLE",
    "AKIA",
    "IOSFODNN7EXAMPLE",
    "\x1b[31m",
    "\x1b[0m",
    "\x1b[2;1H",
    "\x1b[4C",
    "\x1bE",
    "\x1b]0;t\x07",
    "\x1b",
    "[3",
    " ",
    "\n",
    "\r\n",
    "password",
    "=",
    ": ",
    '"',
    "hunter2",
    "bob@example.com",
    "@",
    "example.com",
    "4111 1111 1111 1111",
    "4111",
    "-",
    "123-45-6789",
    "(555) 234-5678",
    "+44 20 7946 0958",
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "-----BEGIN RSA PRIVATE KEY-----",
    "MIIEpAIBAAKCAQEA",
    "-----END RSA PRIVATE KEY-----",
    "\\n",
    GITHUB,
    "a" * 40,
    "eyJhbGciOiJIUzI1NiJ9",
    ".",
    "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
    "postgres://app:p4ss@db",
    "://",
    "Bearer ",
    "token",
    "secret",
    "xoxb-1234567890-abcdefghij",
    "sk_live_abcdefghij12",
    "AIza",
    "x",
    "0",
    "1234",
    "ya29.abcdefghijklmnopqrstu",
    "GOCSPX-",
    "hooks.slack.com/services/",
    "T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "é",
    "\x00",
    # issue 15: provider prefixes, key bodies, labels
    "sk-proj-",
    "sk-ant-api03-",
    "hf_",
    "npm_",
    "GR1348941",
    "8Q~",
    ".atlasv1.",
    "SG.",
    "hvs.",
    "ABSK",
    "AccountKey=",
    "b3BlbnNzaC1rZXktdjE",
    "MIIEpAIBAAKCAQEA",
    "MC4CAQAwBQYDK2Vw",
    "-u ",
    "admin:",
    "key: ",
    "auth",
    "<token>",
    "</",
    "Authorization: Token ",
    "_v2",
    "?=",
]
outputs = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=40).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogatepass")
)
HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(data=outputs, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30))
def test_any_split_into_chunks_masks_like_the_whole(data: bytes, cuts: list[int]) -> None:
    for masker in MASKERS:
        whole, counts = masker.mask(data)
        pieces, piece_counts, most_held = feed_in_pieces(masker, data, cuts)
        assert pieces == whole
        assert piece_counts == counts
        assert most_held <= masker.longest_hold  # few escape sequences here; see test_held_bytes_have_a_limit


@HYPOTHESIS
@given(data=outputs)
def test_prefilters_find_what_every_regex_finds_on_its_own(data: bytes) -> None:
    expected = BRUTE_FORCE.mask(data)
    for masker in MASKERS:
        assert masker.mask(data) == expected


@HYPOTHESIS
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=20))
def test_any_bytes_split_anywhere(data: bytes, cuts: list[int]) -> None:
    assert feed_in_pieces(MASKER, data, cuts)[0] == MASKER.mask(data)[0]


LONG_PIECES = ["\x1b[1mlog line\x1b[0m\n" * 300, "\x1b]0;" + "t" * 3000 + "\x07", "\x1b[31m" * 600, "x" * 5000]
long_outputs = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.sampled_from(LONG_PIECES)), max_size=24).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogatepass")
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=long_outputs, cuts=st.lists(st.integers(min_value=0, max_value=40000), max_size=12))
def test_long_output_with_many_escape_sequences_splits_like_the_whole(data: bytes, cuts: list[int]) -> None:
    """Sequences far from the end are found in one regex pass; near the end one by one: both must agree."""
    whole, counts = MASKER.mask(data)
    pieces, piece_counts, _ = feed_in_pieces(MASKER, data, cuts)
    assert pieces == whole
    assert piece_counts == counts


def test_unfinished_long_sequence_in_a_secret_is_held_at_any_cut() -> None:
    data = b"x" * 6000 + b" AKIAIOSF\x1b]0;" + b"t" * 300 + b"\x07ODNN7EXAMPLE\n"
    whole, _ = MASKER.mask(data)
    assert b"[masked:aws-key]" in whole
    for cut in range(5990, len(data), 7):
        assert feed_in_pieces(MASKER, data, [cut])[0] == whole, cut


def test_secret_with_colours_far_into_a_large_chunk_is_masked() -> None:
    data = b"\x1b[1mok\x1b[0m\n" * 2000 + b"key AKIA\x1b[1mIOSFODNN7\x1b[0mEXAMPLE done\n" + b"x" * 9000
    masked, counts = MASKER.mask(data)
    assert b"IOSFODNN7" not in masked and counts == {"aws-key": 1}
    assert b"key [masked:aws-key]\x1b[1m\x1b[0m done" in masked


def test_only_what_could_start_a_secret_is_held() -> None:
    stream = MASKER.stream()
    assert stream.feed(b"total 42\n") == b"total 42\n"
    assert stream.feed(b"$ ") == b"$ "
    assert stream.feed(b"ls -l; echo AKIA") == b"ls -l; echo "
    assert stream.held == 4
    assert stream.feed(b"IOSFODNN7EXAMPLE") == b""
    assert stream.feed(b" done") == b"[masked:aws-key] "
    assert stream.flush() == b"done"
    assert stream.held == 0


def test_interactive_echo_is_released_by_flush() -> None:
    stream = MASKER.stream()
    shown = b""
    for char in b"whoami\r\n":
        shown += stream.feed(bytes([char])) + stream.flush()  # the session flushes after idle_release
    assert shown == b"whoami\r\n"


def test_secret_split_across_an_idle_flush_is_partly_shown() -> None:
    """The documented limit: held bytes are released on idle, so a pause mid-secret shows its start."""
    stream = MASKER.stream()
    first = stream.feed(b"key AKIAIOSF") + stream.flush()
    assert first == b"key AKIAIOSF"
    assert stream.feed(b"ODNN7EXAMPLE\n") + stream.flush() == b"ODNN7EXAMPLE\n"


def test_held_bytes_have_a_limit() -> None:
    """Escape sequences do not count towards a secret's length, so a flood of them is cut off."""
    stream = MASKER.stream()
    out = stream.feed(b"x AKIA")
    for _ in range(40):
        out += stream.feed(b"\x1b[0m" * 2048)
        assert stream.held <= HELD_LIMIT
    assert out.startswith(b"x [masked:overflow]\x1b[0m")  # the held text is masked whole, the sequences kept


def test_a_token_coloured_character_by_character_is_masked_at_any_chunk_size() -> None:
    """A rainbow filter puts a sequence before every character: 10x the raw bytes, still one secret."""
    payload = "c3ViIjoiMTIzNDU2Nzg5MCJ9" * 560
    token = "eyJhbGciOiJIUzI1NiJ9.eyJ" + payload + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    raw = b"id " + b"".join(b"\x1b[38;5;%dm%s" % (index % 230, char.encode()) for index, char in enumerate(token))
    raw += b"\x1b[0m done\n"
    whole = MASKER.mask(raw)[0]
    assert whole.startswith(b"id \x1b[38;5;0m[masked:jwt]\x1b[38;5;1m") and whole.endswith(b"\x1b[0m done\n")
    for size in (4096, 32768):
        out, _, _ = feed_in_pieces(MASKER, raw, list(range(size, len(raw), size)))
        assert out == whole


def test_hold_is_bounded_for_a_long_run_that_could_be_a_secret() -> None:
    stream = MASKER.stream()
    most_held = 0
    for _ in range(1000):
        stream.feed(b"eyJ" + b"a" * 97)
        most_held = max(most_held, stream.held)
    assert most_held <= MASKER.longest_hold


# Custom patterns and settings -------------------------------------------------------------------------


def custom(*patterns: dict[str, str], packs: tuple[str, ...] = ()) -> Masker:
    return Masker.from_settings(MaskingSettings(packs=packs, patterns=tuple(MaskPattern(**p) for p in patterns)))


def test_custom_pattern_with_default_and_own_replacement() -> None:
    masker = custom(
        {"name": "ticket", "regex": r"TICKET-\d{4,8}"},
        {"name": "acme-key", "regex": r"acme_[a-z0-9]{16}", "replacement": "<acme>"},
    )
    out, counts = masker.mask(b"see TICKET-12345 and acme_0123456789abcdef.")
    assert out == b"see [masked:ticket] and <acme>."
    assert counts == {"ticket": 1, "acme-key": 1}


def test_custom_pattern_replaces_only_its_secret_group() -> None:
    masker = custom({"name": "pin", "regex": r"PIN:\s*(?P<secret>\d{4,6})\b"})
    assert masker.mask_text("card PIN: 1234 ok") == "card PIN: [masked:pin] ok"


def test_custom_pattern_unbounded_repetition_is_capped_and_streams() -> None:
    masker = custom({"name": "blob", "regex": r"BLOB\[[a-z]+\]"})
    assert masker.mask_text("x BLOB[abc] y") == "x [masked:blob] y"
    data = b"BLOB[" + b"a" * 1000 + b"]"
    assert masker.mask(data)[0] == data  # longer than the cap of 256 repetitions: not a match
    assert feed_in_pieces(masker, data * 3, list(range(0, 3100, 7)))[0] == masker.mask(data * 3)[0]


def test_custom_patterns_come_before_the_packs() -> None:
    masker = Masker.from_settings(
        MaskingSettings(patterns=(MaskPattern(name="example-key", regex=r"AKIA[A-Z0-9]{9}EXAMPLE"),))
    )
    assert masker.mask_text("AKIAIOSFODNN7EXAMPLE") == "[masked:example-key]"


def test_custom_pattern_lines_anchor_with_caret_and_dollar() -> None:
    masker = custom({"name": "motd", "regex": r"^secret line$"})
    assert masker.mask_text("a\nsecret line\nb secret line") == "a\n[masked:motd]\nb secret line"


@pytest.mark.parametrize(
    ("regex", "reason"),
    [
        (r"abc(", "invalid regex: missing ), unterminated subpattern at position 3"),
        (r"(a)\1", "backreferences are not supported"),
        (r"\Atoken", "\\A and \\Z are not supported"),
        (r"a*", "matches an empty string"),
        (r"(?:x{1,100}){200}", "can match more than"),
    ],
)
def test_invalid_custom_pattern_is_refused_with_one_line(regex: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MaskPattern(name="bad", regex=regex)
    message = str(caught.value.errors()[0]["msg"])
    assert reason in message and "\n" not in message


def test_unknown_pack_lists_the_valid_ones() -> None:
    with pytest.raises(ValidationError, match="unknown pack 'keys'; valid packs: secrets, pii"):
        MaskingSettings(packs=("secrets", "keys"))


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"patterns": [{"name": "Bad Name", "regex": "x"}]}, "expected lowercase letters"),
        ({"patterns": [{"name": "a", "regex": "x"}, {"name": "a", "regex": "y"}]}, "two patterns are named 'a'"),
        ({"idle_release": 0.02}, 'duration as a string such as "0.02s"'),
        ({"colour": True}, "Extra inputs are not permitted"),
        ({"patterns": [{"name": "a", "regex": "x", "flags": "i"}]}, "Extra inputs are not permitted"),
    ],
)
def test_settings_errors(table: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(fragment)):
        MaskingSettings.model_validate(table)


def test_settings_defaults_and_durations() -> None:
    defaults = MaskingSettings()
    assert defaults.packs == ("secrets", "pii") and defaults.transfers is False and defaults.idle_release is None
    assert MaskingSettings.model_validate({"idle_release": "50ms"}).idle_release == pytest.approx(0.05)
    assert Masker.from_settings(MaskingSettings(packs=("pii",))).mask_text("AKIAIOSFODNN7EXAMPLE a@b.io") == (
        "AKIAIOSFODNN7EXAMPLE [masked:email]"
    )


def test_no_packs_no_patterns_passes_everything_through() -> None:
    masker = Masker.from_settings(MaskingSettings(packs=()))
    assert masker.mask(b"AKIAIOSFODNN7EXAMPLE\x1b[0m") == (b"AKIAIOSFODNN7EXAMPLE\x1b[0m", {})


# The regex analysis behind the hold ----------------------------------------------------------------

ATOMS = ["a", "b", "[ab]", "[^a]", ".", "\\n", "\\w", "\\s"]


@st.composite
def small_regexes(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 3 or draw(st.integers(0, 9)) < 3:
        return draw(st.sampled_from(ATOMS))
    kind = draw(st.sampled_from(["seq", "alt", "repeat", "look", "assert", "behind", "atomic"]))
    a, b = draw(small_regexes(depth + 1)), draw(small_regexes(depth + 1))
    repeat = draw(st.sampled_from(["{0,2}", "{1,3}", "?", "{2}", "{1,2}?", "{0,3}+"]))
    return {
        "seq": a + b,
        "alt": f"(?:{a}|{b})",
        "repeat": f"(?:{a}){repeat}",
        "look": f"(?{draw(st.sampled_from(['=', '!']))}{a}){b}",
        "assert": draw(st.sampled_from(["\\b", "\\B", "$", "^"])) + a,
        "behind": f"(?<=a){a}",
        "atomic": f"(?>{a}){b}",
    }[kind]


@settings(max_examples=400, deadline=None)
@given(
    source=small_regexes(),
    flags=st.sampled_from([0, re.M, re.S, re.I]),
    text=st.binary(max_size=6).map(lambda b: bytes(b"ab\n "[x % 4] for x in b)),
    more=st.binary(min_size=1, max_size=6).map(lambda b: bytes(b"ab\n "[x % 4] for x in b)),
)
def test_a_decided_start_matches_the_same_whatever_follows(source: str, flags: int, text: bytes, more: bytes) -> None:
    pattern = re.compile(source.encode(), flags)
    try:
        shape = analyse(pattern)
    except UnsupportedPattern:
        return
    for start in range(len(text) + 1):
        if shape.undecided.match(text, start) is None:
            now, later = pattern.match(text, start), pattern.match(text + more, start)
            assert (now and now.span()) == (later and later.span())


def test_a_large_piece_is_masked_as_one_whatever_the_internal_steps() -> None:
    """Pieces over 64 KiB are masked in steps; the hold limit applies to the piece, not to each step."""
    data = b"x" * 30000 + b" AKIAIOSF" + b"\x1b[0m" * 9000 + b"ODNN7EXAMPLE\n"
    masked, counts = MASKER.mask(data)
    assert counts == {"aws-key": 1} and b"IOSF" not in masked
