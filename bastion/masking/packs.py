"""The built-in masking packs: `secrets` (keys, tokens, passwords) and `pii` (personal data).

Each detector is an exact regex, the definition of what it masks, plus for speed the anchor family
its matches start at: a short literal such as `AKIA` or `@` that a prefilter finds in one pass, so
that the exact regex is tried only there (and at its `lead`, for matches that start a little before
their anchor). Every repetition is bounded, so every detector has a longest match; see
docs/design/0006-masking.md for the bounds and for what each pack does and does not catch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bastion.masking.regex import RegexShape, analyse


@dataclass(frozen=True)
class Detector:
    """One kind of secret: what it is called, how it is found, what replaces it."""

    name: str  # the label in `[masked:NAME]` and the key in the counts
    shape: RegexShape
    replacement: bytes
    secret_groups: tuple[str, ...] = ()  # replace the first of these groups that took part; none: the match
    check: Callable[[bytes], bool] | None = None  # a checksum on the replaced bytes (Luhn, IBAN)
    family: str | None = None  # the anchor every match starts at (see ANCHORS); None: scanned on its own
    lead: re.Pattern[bytes] | None = None  # what may come before the anchor, if a match can start earlier
    before: int = 0  # the most bytes `lead` can match
    opens_block: bool = False  # a private key block: what follows is dropped up to its END line

    @property
    def pattern(self) -> re.Pattern[bytes]:
        return self.shape.pattern


def label(name: str) -> bytes:
    return b"[masked:" + name.encode() + b"]"


def luhn_valid(digits: bytes) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = char - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_number(secret: bytes) -> bool:
    digits = secret.replace(b" ", b"").replace(b"-", b"")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def phone_number(secret: bytes) -> bool:
    return 8 <= sum(char in b"0123456789" for char in secret) <= 15


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_valid(secret: bytes) -> bool:
    """Country length and the ISO 13616 check digits (mod 97 of the rearranged number is 1)."""
    iban = secret.replace(b" ", b"").decode("ascii")
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


# Anchors ------------------------------------------------------------------------------------------
#
# Every match of a detector starts at an anchor of its family, or at the start of `lead` right before
# one. A prefilter reports the start of every anchor (not only non-overlapping ones) and names its
# family after the regex group that matched; no two families' anchors can start at the same position,
# so one pass of one alternation finds them all. `ANCHOR_PASSES` does it with the standard library, one
# fast pass per literal, on the output ("text"), lowercased ("lower"), or with digits as 0 and
# capitals as A ("shape"); `ANCHORS` is the same as one alternation for google-re2.

ANCHOR_PASSES: tuple[tuple[str, bytes], ...] = (
    ("text", rb"(?P<pem>-----BEGIN )"),
    ("text", rb"A(?:(?P<aws_key>KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA)|(?P<google_key>Iza))"),
    ("text", rb"g(?:(?P<github>h[pousr]_|ithub_pat_)|(?P<gitlab>l(?:pat|dt|rt|ptt|soat|cbt|imt|agent|oas)-))"),
    ("text", rb"x(?P<slack>ox[abposr]-|app-)"),
    ("text", rb"(?P<slack_hook>hooks\.slack\.com/)"),
    ("text", rb"k_(?P<stripe>live_|test_)"),
    ("text", rb"(?P<google_token>ya29\.)"),
    ("text", rb"(?P<google_secret>GOCSPX-)"),
    ("text", rb"(?P<jwt>eyJ)"),
    ("text", rb"(?P<email>@)(?<=[A-Za-z0-9._%+-]@)(?=[A-Za-z0-9])"),
    ("text", rb"(?P<url>://)"),
    ("lower", rb"(?P<password>pass(?:w|phrase))"),
    ("lower", rb"(?P<password>pwd)"),
    ("lower", rb"(?P<aws_secret>aws_?secret)"),
    ("lower", rb"secret(?:(?P<aws_secret>_?access)|(?P<secret>))"),
    ("lower", rb"(?P<secret>token)"),
    ("lower", rb"(?P<secret>api[_-]?key)"),
    ("lower", rb"(?P<auth>bearer)"),
    ("lower", rb"(?P<auth>authorization)"),
    ("shape", rb"000(?:(?P<card>0[ -]0000|0000000000)|(?P<phone>[-.]000[-.]0000)|(?P<ssn>-00-0000))"),  # card: 2-6
    ("shape", rb"(?P<phone>\(000\))"),
    ("shape", rb"(?P<plus>\+0)"),
    ("shape", rb"(?P<iban>AA00)"),
)
ANCHORS: tuple[tuple[str, bytes, int], ...] = (  # (family, regex, where the anchor is in what it matches)
    ("pem", rb"-----BEGIN ", 0),
    ("aws_key", rb"A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA)", 0),
    ("google_key", rb"AIza", 0),
    ("github", rb"gh[pousr]_|github_pat_", 0),
    ("gitlab", rb"gl(?:pat|dt|rt|ptt|soat|cbt|imt|agent|oas)-", 0),
    ("slack", rb"xox[abposr]-|xapp-", 0),
    ("slack_hook", rb"hooks\.slack\.com/", 0),
    ("stripe", rb"k_(?:live|test)_", 0),
    ("google_token", rb"ya29\.", 0),
    ("google_secret", rb"GOCSPX-", 0),
    ("jwt", rb"eyJ", 0),
    ("email", rb"[A-Za-z0-9._%+-]@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.[A-Za-z0-9]", 1),  # a label and a dot
    ("url", rb"://", 0),
    ("password", rb"(?i:pass(?:w|phrase)|pwd)", 0),
    ("aws_secret", rb"(?i:aws_?secret|secret_?access)", 0),  # before "secret", which starts the same way
    ("secret", rb"(?i:secret|token|api[_-]?key)", 0),
    ("auth", rb"(?i:bearer|authorization)", 0),
    ("card", rb"\b[2-6]\d{3}(?:[ -]\d{4}|\d{9})", 0),  # \b: the exact regexes refuse a word byte before
    ("phone", rb"\b\d{3}[-.]\d{3}[-.]\d{4}|\(\d{3}\)", 0),
    ("ssn", rb"\b\d{3}-\d\d-\d{4}", 0),
    ("plus", rb"\+[1-9][ .-]?\(?\d", 0),
    ("iban", rb"[A-Z]{2}\d\d", 0),
)

# Exact patterns -----------------------------------------------------------------------------------

_OPERATOR = rb"""["']?[ \t]{0,8}(?:=>|:=|[:=])[ \t]{0,8}"""
# values that specific detectors label better, or that are not secrets: placeholders, code, masks
_NOT_A_VALUE = (
    rb"""(?!["']?(?:gh[pousr]_|github_pat_|gl(?:pat|dt|rt|ptt)-|xox[abposr]-|[rs]k_(?:live|test)_|AKIA|ASIA|"""
    rb"""AIza|ya29\.|GOCSPX-|eyJ|(?i:bearer)[ \t]))"""
    rb"""(?!(?i:null|none|nil|true|false|undefined)(?![A-Za-z0-9_]))"""
    rb"""(?![A-Za-z_][A-Za-z0-9_]{0,64}(?:\.[A-Za-z_][A-Za-z0-9_]{0,64}){0,8}[(\[])"""
)
_VALUE = (
    _NOT_A_VALUE + rb"""(?:"(?P<quoted>[^"\r\n]{1,256})|'(?P<single>[^'\r\n]{1,256})"""
    rb"""|(?P<bare>[^\s"',;&=<>()\[\]{}$%*][^\s",;&<>]{0,255}))"""  # a bare value may hold ' (it's)
)
_VALUE_GROUPS = ("quoted", "single", "bare")
# after `pwd`: not the shell's PWD or OLDPWD (`env`, `export -p`, os.environ): those names, in capitals and
# on their own, set to an absolute path (looked at from after the keyword: the undecided-start search stays fast)
_SHELL_PWD = (
    rb"""(?!(?-i:(?<=PWD)(?<![A-Za-z0-9_]PWD)|(?<=OLDPWD)(?<![A-Za-z0-9_]OLDPWD))""" + _OPERATOR + rb"""["']?/)"""
)
_B = rb"(?<![A-Za-z0-9_])"  # a token starts at a word boundary

# (name, exact regex, anchor family, lead: what may come before the anchor)
SECRETS: tuple[tuple[str, bytes, str, bytes | None], ...] = (
    ("private-key", rb"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----", "pem", None),
    (
        "aws-key",
        rb"(?<![A-Za-z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        "aws_key",
        None,
    ),
    (
        "aws-secret",
        rb"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)"
        + _OPERATOR
        + rb"""["']?(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])""",
        "aws_secret",
        None,
    ),
    ("github-token", _B + rb"(?:gh[pousr]_[A-Za-z0-9]{36,251}+|github_pat_[A-Za-z0-9_]{22,251}+)", "github", None),
    ("gitlab-token", _B + rb"gl(?:pat|dt|rt|ptt|soat|cbt|imt|agent|oas)-[A-Za-z0-9_-]{20,251}+", "gitlab", None),
    ("slack-token", _B + rb"(?:xox[abposr]-[A-Za-z0-9-]{10,251}+|xapp-\d-[A-Za-z0-9-]{10,251}+)", "slack", None),
    (
        "slack-webhook",
        rb"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/-]{20,251}+)",
        "slack_hook",
        None,
    ),
    ("stripe-key", _B + rb"[rs]k_(?:live|test)_[A-Za-z0-9]{10,251}+", "stripe", rb"[rs]"),
    ("google-api-key", rb"(?<![A-Za-z0-9_-])AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])", "google_key", None),
    ("google-token", rb"(?<![A-Za-z0-9_-])ya29\.[A-Za-z0-9_-]{20,2048}+", "google_token", None),
    ("google-secret", rb"(?<![A-Za-z0-9_-])GOCSPX-[A-Za-z0-9_-]{28}(?![A-Za-z0-9_-])", "google_secret", None),
    (
        # header, payload, signature; a header or payload longer than its bound has its first part masked
        "jwt",
        rb"(?<![A-Za-z0-9_-])eyJ(?:[A-Za-z0-9_-]{8,1024}+\.eyJ"
        rb"(?:[A-Za-z0-9_-]{8,14000}+\.[A-Za-z0-9_-]{0,1024}+|[A-Za-z0-9_-]{14000})|[A-Za-z0-9_-]{1024})",
        "jwt",
        None,
    ),
    (
        # the password runs to the last `@` before the host (passwords may hold `@`); never past a `/`
        "url-password",
        rb"""(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,20}://[^\s:@/?#"'<>]{0,128}:(?P<secret>[^\s/?#"'<>]{1,256})@""",
        "url",
        rb"[A-Za-z][A-Za-z0-9+.-]{0,20}",
    ),
    ("bearer-token", rb"(?i:bearer)[ \t]{1,8}(?P<secret>[A-Za-z0-9._~+/-]{16,16000}+={0,2})", "auth", None),
    (
        "basic-auth",
        rb"(?i:authorization)" + _OPERATOR + rb"""["']?(?i:basic)[ \t]{1,8}(?P<secret>[A-Za-z0-9+/]{8,1024}+={0,2})""",
        "auth",
        None,
    ),
    ("password", rb"(?i:passw(?:or)?d|passphrase|pwd" + _SHELL_PWD + rb")" + _OPERATOR + _VALUE, "password", None),
    ("secret", rb"(?i:secret[_-]?key|secret|token|api[_-]?key)" + _OPERATOR + _VALUE, "secret", None),
)

PII: tuple[tuple[str, bytes, str, bytes | None], ...] = (
    (
        "card",
        rb"(?<![\w.-])(?:[2-6]\d{12,18}|[2-6]\d{3}(?: \d{4}){3}(?: \d{3})?|[2-6]\d{3}(?:-\d{4}){3}(?:-\d{3})?"
        rb"|3\d{3}[ -]\d{6}[ -]\d{4,5})(?![\w-]|[. -]\d)",
        "card",
        None,
    ),
    (
        "phone",
        rb"(?<![\w.+-])(?:1[ .-])?(?:\([2-9]\d\d\)[ .-]?|[2-9]\d\d[.-])[2-9]\d\d[.-]\d{4}(?![\w-]|\.\d)",
        "phone",
        rb"1[ .-]",
    ),
    ("phone", rb"(?<![\w+])\+[1-9]\d{0,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){1,6}(?![\w+]|[.-]\d)", "plus", None),
    ("ssn", rb"(?<![\w-])(?!000|666|9)\d{3}-(?!00)\d\d-(?!0000)\d{4}(?![\w-])", "ssn", None),
    (
        "iban",
        rb"(?<![A-Za-z0-9])[A-Z]{2}\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])",
        "iban",
        None,
    ),
    (
        "email",
        rb"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
        rb"[A-Za-z]{2,24}(?![A-Za-z0-9-])",
        "email",
        rb"[A-Za-z0-9._%+-]{1,64}",
    ),
)

_CHECKS: dict[str, Callable[[bytes], bool]] = {"card": card_number, "phone": phone_number, "iban": iban_valid}
_SECRET_GROUPS = {"password": _VALUE_GROUPS, "secret": _VALUE_GROUPS}

# A private key block after its BEGIN line: base64 runs, line breaks (also escaped ones, as in JSON),
# encapsulated headers, blank lines before more base64, and the END line, which closes the block.
# Lines may be indented (YAML, heredocs) and end in spaces; JSON may escape `/` as `\/` (PHP does).
BLOCK_END = "end"
_BREAK = rb"(?:\r{0,4}\n|(?:\\r)?\\n)"  # a line break, or one escaped as in a JSON string
_NEXT_LINE = rb"[ \t]{0,64}" + _BREAK + rb"[ \t]{0,64}"  # trailing blanks, the break, the next line's indent
# several breaks: blank lines, or cursor moves between the lines of a screen (each shows as a line feed)
_BREAKS = rb"(?:[ \t]{0,64}" + _BREAK + rb"){1,8}[ \t\r]{0,64}"
_BASE64 = rb"(?:[A-Za-z0-9+/=]|\\/)"
BLOCK_STEP = analyse(
    re.compile(
        rb"(?P<end>" + _BREAKS + rb"-----END [A-Z0-9 ]{0,40}-----)"
        rb"|" + _NEXT_LINE + rb"[A-Za-z][A-Za-z-]{0,30}: [^\r\n\\]{0,256}"  # Proc-Type:, DEK-Info:, Comment:
        rb"|" + _BREAKS + rb"(?=" + _BASE64 + rb")"
        rb"|[A-Za-z0-9+/=]{1,256}[ \t]{1,8}(?=[A-Za-z0-9+/=]{16})"  # a cursor move along a line shows as a space
        rb"|[A-Za-z0-9+/=]{1,256}"
        rb"|\\/"
    )
)


def _detector(name: str, source: bytes, family: str, lead: bytes | None) -> Detector:
    pattern = re.compile(source)
    groups = _SECRET_GROUPS.get(name, ("secret",) if "secret" in pattern.groupindex else ())
    lead_shape = analyse(re.compile(lead)) if lead else None
    return Detector(
        name=name,
        shape=analyse(pattern),
        replacement=label(name),
        secret_groups=groups,
        check=_CHECKS.get(name),
        family=family,
        lead=re.compile(b"(?:" + lead + b")\\Z") if lead else None,
        before=lead_shape.reach - 1 if lead_shape else 0,
        opens_block=name == "private-key",
    )


PACKS: dict[str, tuple[Detector, ...]] = {
    "secrets": tuple(_detector(*spec) for spec in SECRETS),
    "pii": tuple(_detector(*spec) for spec in PII),
}
