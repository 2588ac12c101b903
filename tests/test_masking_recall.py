"""Recall on the secrets people meet (issue 15): provider tokens without a label, labelled values of any
length and after any label, private keys after a label or without their BEGIN line.

Every token here is generated from the provider's documented shape with a fixed seed: none is real."""

from __future__ import annotations

import random
import string

import pytest

from tests.masking_support import MASKER
from tests.test_masking_packs import assert_chunk_independent

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"


def masked(text: str) -> str:
    return MASKER.mask_text(text)


def rand(n: int, chars: str = ALNUM, seed: object = 0) -> str:
    rng = random.Random(f"{seed}-{n}-{chars}")
    return "".join(rng.choice(chars) for _ in range(n))


def with_digit(n: int, chars: str = ALNUM, seed: object = 0) -> str:
    return rand(n - 1, chars, seed) + "7"


# Provider-prefixed tokens, on a line of their own ----------------------------------------------------

PROVIDER_TOKENS = [
    # AI providers
    ("openai-key", "sk-proj-" + rand(74, URLSAFE, 1) + "T3BlbkFJ" + rand(74, URLSAFE, 2)),
    ("openai-key", "sk-svcacct-" + rand(60, URLSAFE, 3)),
    ("openai-key", "sk-admin-" + rand(60, URLSAFE, 4)),
    ("openai-key", "sk-" + rand(20, ALNUM, 5) + "T3BlbkFJ" + rand(20, ALNUM, 6)),
    ("openai-key", "sk-" + with_digit(48, ALNUM, 7)),
    ("anthropic-key", "sk-ant-api03-" + rand(93, URLSAFE, 8) + "AA"),
    ("anthropic-key", "sk-ant-admin01-" + rand(93, URLSAFE, 9) + "AA"),
    ("huggingface-token", "hf_" + rand(34, string.ascii_letters, 10)),
    ("groq-key", "gsk_" + rand(52, ALNUM, 11)),
    ("replicate-token", "r8_" + rand(37, ALNUM, 12)),
    ("perplexity-key", "pplx-" + rand(48, ALNUM, 13)),
    ("xai-key", "xai-" + rand(80, ALNUM, 14)),
    # package registries and platforms
    ("npm-token", "npm_" + rand(36, ALNUM, 15)),
    ("pypi-token", "pypi-AgEIcHlwaS5vcmc" + rand(70, URLSAFE, 16)),
    ("docker-token", "dckr_pat_" + rand(27, URLSAFE, 17)),
    ("vault-token", "hvs." + rand(91, URLSAFE, 18)),
    ("vault-token", "hvb." + rand(138, URLSAFE, 19)),
    ("vault-token", "hvr." + rand(30, URLSAFE, 20)),
    ("terraform-token", rand(14, ALNUM, 21) + ".atlasv1." + rand(67, URLSAFE, 22)),
    ("grafana-token", "glsa_" + rand(32, ALNUM, 23) + "_" + rand(8, HEX, 24)),
    ("grafana-token", "glc_" + rand(100, B64, 25) + "=="),
    ("sendgrid-key", "SG." + rand(22, URLSAFE, 26) + "." + rand(43, URLSAFE, 27)),
    ("shopify-token", "shpat_" + rand(32, HEX, 28)),
    ("shopify-token", "shpss_" + rand(32, HEX, 29)),
    ("shopify-token", "shpca_" + rand(32, HEX, 30)),
    ("shopify-token", "shppa_" + rand(32, HEX, 31)),
    ("stripe-key", "whsec_" + rand(32, ALNUM, 32)),
    ("stripe-key", "rk_live_" + rand(24, ALNUM, 33)),
    ("digitalocean-token", "dop_v1_" + rand(64, HEX, 34)),
    ("digitalocean-token", "doo_v1_" + rand(64, HEX, 35)),
    ("digitalocean-token", "dor_v1_" + rand(64, HEX, 36)),
    ("atlassian-token", "ATATT3xFfGF0" + rand(170, URLSAFE, 37) + "=" + rand(8, HEX, 38).upper()),
    ("linear-key", "lin_api_" + rand(40, ALNUM, 39)),
    ("postman-key", "PMAK-" + rand(24, HEX, 40) + "-" + rand(34, HEX, 41)),
    ("doppler-token", "dp.pt." + rand(43, ALNUM, 42)),
    ("doppler-token", "dp.st.prd." + rand(43, ALNUM, 43)),
    ("pulumi-token", "pul-" + rand(40, HEX, 44)),
    ("databricks-token", "dapi" + rand(32, HEX, 45)),
    ("databricks-token", "dapi" + rand(32, HEX, 46) + "-2"),
    ("figma-token", "figd_" + rand(40, URLSAFE, 47)),
    ("sentry-token", "sntrys_eyJpYXQiOjE2OTQ" + rand(100, URLSAFE, 48)),
    ("sentry-token", "sntryu_" + rand(64, HEX, 49)),
    ("newrelic-key", "NRAK-" + rand(27, string.ascii_uppercase + string.digits, 50)),
    # chat, code hosting, clouds
    ("slack-token", "xoxe.xoxp-1-" + rand(150, ALNUM, 51)),
    ("slack-token", "xoxe-1-" + rand(140, ALNUM, 52)),
    ("gitlab-token", "glft-" + rand(20, URLSAFE, 53)),
    ("gitlab-token", "glrt-" + rand(20, URLSAFE, 54)),
    ("gitlab-token", "glcbt-64_" + rand(20, URLSAFE, 55)),
    ("gitlab-token", "gldt-" + rand(20, URLSAFE, 56)),
    ("gitlab-token", "GR1348941" + rand(20, URLSAFE, 57)),
    ("github-token", "ghs_" + rand(36, ALNUM, 58)),
    ("github-token", "ghr_" + rand(36, ALNUM, 59)),
    ("azure-secret", rand(3, ALNUM, 60) + "8Q~" + rand(34, ALNUM + "_~.-", 61)),
    ("aws-bedrock-key", "ABSKQmVkcm9ja0FQSUtleS1" + rand(108, B64, 62) + "="),
    ("aws-bedrock-key", "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29t" + rand(300, B64, 63)),
]
assert len({token for _, token in PROVIDER_TOKENS}) == len(PROVIDER_TOKENS)


@pytest.mark.parametrize(("kind", "token"), PROVIDER_TOKENS, ids=[token[:12] for _, token in PROVIDER_TOKENS])
def test_a_provider_token_alone_on_a_line_is_masked(kind: str, token: str) -> None:
    assert masked(f"{token}\n") == f"[masked:{kind}]\n"
    assert masked(f"$ echo {token} | pbcopy") == f"$ echo [masked:{kind}] | pbcopy"
    assert masked(f'{{"key": "{token}"}}') == f'{{"key": "[masked:{kind}]"}}'


@pytest.mark.parametrize(("kind", "token"), PROVIDER_TOKENS[::4], ids=[t[:12] for _, t in PROVIDER_TOKENS[::4]])
def test_provider_tokens_split_anywhere(kind: str, token: str) -> None:
    assert_chunk_independent(f"x {token} y\n", byte_by_byte=False, splits=4)


def test_an_azure_storage_connection_string_masks_its_account_key() -> None:
    key = rand(86, B64, 70) + "=="
    text = f"DefaultEndpointsProtocol=https;AccountName=store1;AccountKey={key};EndpointSuffix=core.windows.net"
    assert masked(text) == text.replace(key, "[masked:azure-storage-key]")
    assert_chunk_independent(text, byte_by_byte=False)


# A private key after a label -------------------------------------------------------------------------

PEM_BODY = [
    "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
]
PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END RSA PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    "label",
    ["token: ", "SECRET_KEY=", "private_key = ", 'password: "', "api_key=", "credentials: ", "auth: ", "key: "],
)
def test_a_private_key_after_a_label_is_masked_whole(label: str) -> None:
    text = label + PEM + "ok\n"
    out = masked(text)
    assert out == label + "[masked:private-key]\nok\n"
    escaped = '{"' + label.strip(' :="') + '": "' + PEM.replace("\n", "\\n") + '"}'
    assert masked(escaped) == '{"' + label.strip(' :="') + '": "[masked:private-key]\\n"}'
    assert_chunk_independent(text, byte_by_byte=False)


# Labelled values of any length --------------------------------------------------------------------------


@pytest.mark.parametrize("length", [300, 1000, 4096, 15_000])
def test_a_long_labelled_value_is_masked_whole(length: str) -> None:
    value = rand(length, URLSAFE + ".", 80)
    for text, expected in [
        (f"refresh_token={value}\n", "refresh_token=[masked:secret]\n"),
        (f'{{"session_token": "{value}", "n": 1}}', '{"session_token": "[masked:secret]", "n": 1}'),
        (f"SESSION_PASSWORD: '{value}'\n", "SESSION_PASSWORD: '[masked:password]'\n"),
    ]:
        assert masked(text) == expected
    assert_chunk_independent(f"refresh_token={value}\n", byte_by_byte=False, splits=2)


def test_an_escaped_pem_in_json_under_any_label_shows_no_body() -> None:
    text = '{"type": "service_account", "private_key": "' + PEM.replace("\n", "\\n") + '", "client_id": "1"}'
    out = masked(text)
    assert all(line[:16] not in out for line in PEM_BODY)
    assert '"private_key": "[masked:private-key]\\n"' in out


# Values that start like a token but are not one: the label still masks them --------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "eyJhbGciOiJIUzI1NiJ9broken",  # a JWT's start without its payload
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIi",
        "sk_test_short",  # shorter than a Stripe key
        "sk_live_" + rand(6, ALNUM, 90),
        "ghp_abc123",  # shorter than a GitHub token
        "gho_" + rand(20, ALNUM, 91),
        "xoxb-123",
        "AKIA1234",
        "hvs.CAESIJ-x9",
        "sk-short123",
    ],
)
def test_a_labelled_value_that_starts_like_a_token_is_masked(value: str) -> None:
    assert masked(f"token: {value}\n") == "token: [masked:secret]\n"
    assert masked(f'"api_key": "{value}"') == '"api_key": "[masked:secret]"'
    assert masked(f"PASSWORD={value} make") == "PASSWORD=[masked:password] make"


# Labels the keyword detectors missed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SECRET_KEY_BASE=9f8e7d6c5b4a39281706", "SECRET_KEY_BASE=[masked:secret]"),
        ("DB_PASSWORD_PROD=hunter2", "DB_PASSWORD_PROD=[masked:password]"),
        ("api_key_v2: abc123def456", "api_key_v2: [masked:secret]"),
        ("client_secret_value=abc123def456", "client_secret_value=[masked:secret]"),
        ("spring.datasource.password.prod=hunter2", "spring.datasource.password.prod=[masked:password]"),
        ("key: 4f9a8b7c6d5e4f3a2b1c", "key: [masked:secret]"),
        ("  auth: dXNlcjpwYXNzMTIz\n", "  auth: [masked:secret]\n"),
        ("credentials: c2VjcmV0MTIzNDU2", "credentials: [masked:secret]"),
        ("AccessKey: LTAI5tAbCdEf123456789", "AccessKey: [masked:secret]"),
        ('"AccessKey": "abc123def456ghi"', '"AccessKey": "[masked:secret]"'),
        ("curl -u admin:s3cr3t https://api.example.com", "curl -u admin:[masked:password] https://api.example.com"),
        ("curl --user admin:s3cr3t https://x", "curl --user admin:[masked:password] https://x"),
        ("curl -sS -u 'deploy:p4ss w' https://x", "curl -sS -u 'deploy:[masked:password] w' https://x"),
        ("Authorization: Token abc123def456ghi", "Authorization: Token [masked:auth-token]"),
        ('-H "Authorization: token 9f8e7d6c5b4a3928"', '-H "Authorization: token [masked:auth-token]"'),
        ("authorization: sk_9f8e7d6c5b4a3928", "authorization: [masked:auth-token]"),
        ('var apiToken string = "abc123def456"', 'var apiToken string = "[masked:secret]"'),
        ('apiToken := "abc123def456"', 'apiToken := "[masked:secret]"'),
        ("<apiToken>abc123def456</apiToken>", "<apiToken>[masked:secret]</apiToken>"),
        ("<password>hunter2</password>", "<password>[masked:password]</password>"),
        ("API_TOKEN ?= abc123def456", "API_TOKEN ?= [masked:secret]"),
        ("DB_PASSWORD?=hunter2", "DB_PASSWORD?=[masked:password]"),
        ("token => 'abc123def456'", "token => '[masked:secret]'"),
    ],
)
def test_labels_that_were_missed(text: str, expected: str) -> None:
    assert masked(text) == expected
    assert_chunk_independent(text)


def test_a_token_after_an_authorization_scheme_keeps_its_own_label() -> None:
    token = "ghp_" + rand(36, ALNUM, 95)
    assert masked(f"Authorization: token {token}") == "Authorization: token [masked:github-token]"
    assert masked(f"GITHUB_TOKEN={token}") == "GITHUB_TOKEN=[masked:github-token]"


# A key body is recognised by its own shape ---------------------------------------------------------------

OPENSSH_BODY = [
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    "QyNTUxOQAAACDrVYvH2eTmQz3hUqXrN7T0bXcLw1sP9aJmK4n6cVZ2QAAAAJgAbCdEAGwn",
    "RAAAAAtzc2gtZWQyNTUxOQAAACDrVYvH2eTmQz3hUqXrN7T0bXcLw1sP9aJmK4n6cVZ2QA",
]
DER_STARTS = [  # the first body line of each kind of private key, as openssl and ssh-keygen write them
    "MIIEpAIBAAKCAQEAlUOX+k73" + rand(40, B64, 100),  # PKCS#1 RSA 2048
    "MIIJKAIBAAKCAgEA0DIqxvsi" + rand(40, B64, 101),  # PKCS#1 RSA 4096
    "MIIEvgIBADANBgkqhkiG9w0B" + rand(40, B64, 102),  # PKCS#8 RSA
    "MIIJQgIBADANBgkqhkiG9w0B" + rand(40, B64, 103),  # PKCS#8 RSA 4096
    "MHcCAQEEIDQ0jji5k+kgAbZO" + rand(40, B64, 104),  # SEC1 EC P-256
    "MIGkAgEBBDBN6FIgPBtU9t2D" + rand(40, B64, 105),  # SEC1 EC P-384
    "MIHcAgEBBEIBYD4fhsbQolFe" + rand(40, B64, 106),  # SEC1 EC P-521
    "MIGHAgEAMBMGByqGSM49AgEG" + rand(40, B64, 107),  # PKCS#8 EC P-256
    "MIG2AgEAMBAGByqGSM49AgEG" + rand(40, B64, 108),  # PKCS#8 EC P-384
    "MIHuAgEAMBAGByqGSM49AgEG" + rand(40, B64, 109),  # PKCS#8 EC P-521
    "MC4CAQAwBQYDK2VwBCIEIBiQ" + rand(24, B64, 110),  # PKCS#8 Ed25519
    "MEcCAQAwBQYDK2VxBDsEOa9T" + rand(40, B64, 111),  # PKCS#8 Ed448
    "MIIFLTBXBgkqhkiG9w0BBQ0wSjApBg" + rand(34, B64, 112),  # encrypted PKCS#8 (PBES2)
]


def test_a_key_body_whose_begin_line_was_released_earlier_shows_no_body_line() -> None:
    """head -c 15 key.pem | tr -d '\\n'; then the rest: two outputs, each masked on its own."""
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(OPENSSH_BODY) + "\n-----END OPENSSH PRIVATE KEY-----\n"
    first, rest = pem[:15], pem[15:]
    assert masked(first) == "-----BEGIN OPEN"
    out = masked(rest)
    assert out == "SSH PRIVATE KEY-----\n[masked:private-key]\n"
    assert all(line[:10] not in out for line in OPENSSH_BODY)
    assert_chunk_independent(rest)


@pytest.mark.parametrize("first", DER_STARTS, ids=[start[:10] for start in DER_STARTS])
def test_a_der_key_body_without_its_begin_line_is_masked_from_its_first_line(first: str) -> None:
    body = [first, *PEM_BODY[1:], "kl5u+qKhbwKfBstIs+bMY2ZkpVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn18gnT"]
    for indent in ("", "    "):
        text = "".join(indent + line + "\n" for line in body) + "-----END PRIVATE KEY-----\n$ "
        out = masked(text)
        assert out == indent + "[masked:private-key]\n$ "
    cut = "PRIVATE KEY-----\n" + "\n".join(body) + "\n$ ls\n"  # no END line: up to the first line not base64
    assert masked(cut) == "PRIVATE KEY-----\n[masked:private-key]\n$ ls\n"
    assert_chunk_independent(cut, byte_by_byte=False)


@pytest.mark.parametrize(
    "text",
    [
        "MIIC+TCCAeGgAwIBAgIUY2VydGlmaWNhdGUgYm9keSBoZXJl\n",  # a certificate's body
        "MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQsw\n",
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfV\n",  # an RSA public key
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEdGhpcyBpcyBwdWJs\n",  # an EC public key
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bob@host\n",
    ],
)
def test_certificates_and_public_keys_are_not_key_bodies(text: str) -> None:
    assert "[masked:private-key]" not in masked(text)
