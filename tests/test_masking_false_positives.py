"""Fewer false alarms (issue 15): code that names a secret without holding one, prompts and docstrings,
and numbers that are ids rather than cards; real secrets in configurations are still masked."""

from __future__ import annotations

import pytest

from tests.masking_support import MASKER
from tests.test_masking_packs import assert_chunk_independent


def masked(text: str) -> str:
    return MASKER.mask_text(text)


@pytest.mark.parametrize(
    "text",
    [
        # dotted attribute values
        "token = Name.Builtin",
        "    (r'\\btoken\\b', token)\n    token = Keyword.Pseudo\n",
        "password = self.distribution.password",
        "RegEnumKey = win32api.RegEnumKey",
        'OAUTH2_TOKEN_GENERATOR = "your_project.generators.gen_token"',
        # a bare identifier assigned to a keyword-named variable in code
        "self.password = password",
        "self.distribution.password = password",
        "password = password + b'\\x00' * (blocksize - len(password))",
        "passwd = passwd + 'anonymous@'",
        "cache_token = current_token",
        "lasttoken = token",
        "token = v",
        "self.token = nextchar",
        "exposed, token = result",
        "userid = passwd = acct = ''",
        "TOKEN_ENDS = TSPECIALS | WSP",
        "PseudoToken = Whitespace + group(PseudoExtras, Number)",
        "RC2_KEY = rc2_key_st",
        "token = await client.fetch_token(endpoint)",
        "MSG_USERAUTH_GSSAPI_TOKEN:    _process_token,",
        "def f(hash_alg: HashType, passphrase: BytesOrStr, salt: bytes) -> None:",
        "def f(token: str, password: Optional[str] = None) -> None:",
        "token_auth_class = OAuth2Auth",
        "sorted(items, key=len)",
        "key = lambda item: item[0]",
        # a quoted prompt that ends right after the keyword
        "def unix_getpass(prompt='Password: ', stream=None):",
        "password = getpass.getpass('Password: ')",
        'input("Enter your API token: ")',
        'print("Password: " + masked)',
        # docstrings and parameter prose
        ":param token: A Bearer token dict",
        ":type passphrase: `str` or `bytes`",
        "    token: The token to refresh, or None.\n",
        "Returns the secret: a string of hex digits.",
        # configuration values that name something else than the secret
        "'MODULE_PWD_STATE': 'yes',",
        "'HAVE_STRUCT_PASSWD_PW_PASSWD': 1,",
        'publicKeyToken="b77a5c561934e089"',
        "password_file=/run/secrets/db token_type: bearer secret_name: db-creds",
        "dist.password = 'xxx'",
        'password: "{{ .Values.db.password }}"',
        # generic labels whose values do not look generated
        "- key: app.kubernetes.io/name",
        "<key>ProductUserVisibleVersion</key>",
        "SERVER_AUTH = '1.3.6.1.5.5.7.3.1'",
        "key='rsa:3072'",
        "DISC_KEY_EXCHANGE_FAILED: KeyExchangeFailed,",
        "net.core.netdev_rss_key = 00:00:00:00:00:00:00:00:00:00:00:00",
        "net.ipv4.tcp_fastopen_key = 00000000-00000000-00000000-00000000",
        "credentials: include",
        "auth: required",
        "docker run -u 1000:1000 image",
        # a decimal number is not a phone number
        "Decimal('+35236450.6')",
    ],
)
def test_code_and_prose_naming_a_secret_are_left_alone(text: str) -> None:
    assert masked(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "order 2000000000000000008",  # Luhn-valid, 19 digits starting with 2: no issuer has that length
        "ts 6000000000000000004",  # 19 digits starting with 6 (not 6011, 65, 644-649 or 62)
        "build 3000000000000000007",  # 19 digits starting with 3: no issuer
        "uid 5000000000000009",  # 16 digits starting with 50: not Mastercard (51-55, 2221-2720)
        "id 42000000000000002",  # 17 digits starting with 4: Visa has 13, 16 or 19
    ],
)
def test_digit_runs_that_are_ids_are_not_cards(text: str) -> None:
    assert masked(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111111111111111", "[masked:card]"),  # Visa
        ("5555555555554444", "[masked:card]"),  # Mastercard
        ("2223003122003222", "[masked:card]"),  # Mastercard 2-series
        ("378282246310005", "[masked:card]"),  # Amex
        ("6011111111111117", "[masked:card]"),  # Discover
        ("3530111333300000", "[masked:card]"),  # JCB
        ("30569309025904", "[masked:card]"),  # Diners
        ("6200000000000005", "[masked:card]"),  # UnionPay
        ("5000 0000 0000 0009", "[masked:card]"),  # grouped as a card is printed: any 2-6 start
    ],
)
def test_cards_with_an_issuer_prefix_or_grouped_are_still_masked(text: str, expected: str) -> None:
    assert masked(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2", "password=[masked:password]"),
        ('PASSWORD: "s3cr3t!"', 'PASSWORD: "[masked:password]"'),
        ("token: abc123def456", "token: [masked:secret]"),
        ("password = hunter2\n", "password = [masked:password]\n"),  # INI, with a digit
        ("DB_PASSWORD=letmein make", "DB_PASSWORD=[masked:password] make"),
        ("password: changeme # default\n", "password: [masked:password] # default\n"),
        ("echo password=abc | sudo -S x", "echo password=[masked:password] | sudo -S x"),
        ("mount -o username=bob,password=hunter2,uid=0", "mount -o username=bob,password=[masked:password],uid=0"),
        ('"secret": "KeyExchangeFailed"', '"secret": "[masked:secret]"'),  # a strong label takes any value
        ("password: S3cret.Value!", "password: [masked:password]"),  # not an attribute: it ends in !
    ],
)
def test_real_secrets_in_configs_are_still_masked(text: str, expected: str) -> None:
    assert masked(text) == expected
    assert_chunk_independent(text)
