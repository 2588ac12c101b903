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
    (
        "text",
        rb"A(?:(?P<aws_key>KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA)|(?P<google_key>Iza)|(?P<bedrock>BSK)"
        rb"|(?P<atlassian>TATT3)|(?P<azure_storage>ccountKey=))",
    ),
    (
        "text",
        rb"g(?:(?P<github>h[pousr]_|ithub_pat_)|(?P<gitlab>l(?:pat|dt|rt|ptt|soat|cbt|imt|agent|oas|ft|ffct)-)"
        rb"|(?P<grafana>l(?:sa|c)_)|(?P<groq>sk_))",
    ),
    ("text", rb"(?P<gitlab_runner>1348941)(?<=GR1348941)"),
    ("text", rb"x(?:(?P<slack>ox[abposre]-|oxe\.xox[bp]-|app-)|(?P<xai>ai-))"),
    ("text", rb"h(?:(?P<slack_hook>ooks\.slack\.com/)|(?P<huggingface>f_)|(?P<vault>v[sbr]\.))"),
    ("text", rb"k_(?P<stripe>live_|test_)"),
    ("text", rb"(?P<stripe_hook>whsec_)"),
    ("text", rb"(?P<google_token>ya29\.)"),
    ("text", rb"(?P<google_secret>GOCSPX-)"),
    ("text", rb"(?P<jwt>eyJ)"),
    ("text", rb"s(?:(?P<sk>k-)|(?P<shopify>hp(?:at|ss|ca|pa)_)|(?P<sentry>ntry[su]_))"),
    ("text", rb"p(?:(?P<npm>ypi-AgE)|(?P<perplexity>plx-)|(?P<pulumi>ul-))"),
    ("text", rb"(?P<npm>npm_)"),
    (
        "text",
        rb"d(?:(?P<docker>ckr_(?:pat|oat)_)|(?P<digitalocean>o[por]_v1_)|(?P<doppler>p\.(?:pt|st|sa|ct|scim|audit)\.)"
        rb"|(?P<databricks>api[0-9a-f]))",
    ),
    ("text", rb"(?P<replicate>r8_)"),
    ("text", rb"(?P<terraform>\.atlasv1\.)"),
    ("text", rb"(?P<sendgrid>SG\.)"),
    ("text", rb"(?P<linear>lin_api_)"),
    ("text", rb"(?P<postman>PMAK-)"),
    ("text", rb"(?P<figma>figd_)"),
    ("text", rb"(?P<newrelic>NR(?:AK|II)-)"),
    ("text", rb"(?P<azure_secret>Q~)"),
    ("text", rb"(?P<bedrock>bedrock-api-key-)"),
    ("text", rb"(?P<key_body>b3BlbnNzaC1rZXktdjE)"),
    (
        "text",
        rb"(?P<key_body>M(?:II[A-Za-z0-9+/]{3}(?:IBA|B[A-Za-z0-9+/]Bgk)|HcCAQEE|I[GH][A-Za-z0-9+/]AgE"
        rb"|[CE][A-Za-z0-9+/]CAQAw))",
    ),
    ("text", rb"(?P<email>@)(?<=[A-Za-z0-9._%+-]@)(?=[A-Za-z0-9])"),
    ("text", rb"(?P<url>://)"),
    ("text", rb"-(?P<user_opt>u[ \t]|-user[ \t=])"),
    ("lower", rb"(?P<password>pass(?:w|phrase))"),
    ("lower", rb"(?P<password>pwd)"),
    ("lower", rb"(?P<aws_secret>aws_?secret)"),
    ("lower", rb"secret(?:(?P<aws_secret>_?access)|(?P<secret>))"),
    ("lower", rb"(?P<secret>token)"),
    ("lower", rb"(?P<secret>api[_-]?key)"),
    ("lower", rb"(?P<secret>key)"),
    ("lower", rb"(?P<secret>credential)"),
    ("lower", rb"(?P<auth>bearer)"),
    ("lower", rb"(?P<auth>auth)"),
    ("shape", rb"000(?:(?P<card>0[ -]0000|0000000000)|(?P<phone>[-.]000[-.]0000)|(?P<ssn>-00-0000))"),  # card: 2-6
    ("shape", rb"(?P<phone>\(000\))"),
    ("shape", rb"(?P<plus>\+0)"),
    ("shape", rb"(?P<iban>AA00)"),
)
ANCHORS: tuple[tuple[str, bytes, int], ...] = (  # (family, regex, where the anchor is in what it matches)
    ("pem", rb"-----BEGIN ", 0),
    ("aws_key", rb"A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA)", 0),
    ("google_key", rb"AIza", 0),
    ("bedrock", rb"ABSK|bedrock-api-key-", 0),
    ("atlassian", rb"ATATT3", 0),
    ("azure_storage", rb"AccountKey=", 0),
    ("github", rb"gh[pousr]_|github_pat_", 0),
    ("gitlab", rb"gl(?:pat|dt|rt|ptt|soat|cbt|imt|agent|oas|ft|ffct)-", 0),
    ("gitlab_runner", rb"1348941", 0),  # GR1348941...: the G starts an IBAN's anchor, so this one starts after GR
    ("grafana", rb"gl(?:sa|c)_", 0),
    ("groq", rb"gsk_", 0),
    ("slack", rb"xox[abposre]-|xoxe\.xox[bp]-|xapp-", 0),
    ("xai", rb"xai-", 0),
    ("slack_hook", rb"hooks\.slack\.com/", 0),
    ("huggingface", rb"hf_", 0),
    ("vault", rb"hv[sbr]\.", 0),
    ("stripe", rb"k_(?:live|test)_", 0),
    ("stripe_hook", rb"whsec_", 0),
    ("google_token", rb"ya29\.", 0),
    ("google_secret", rb"GOCSPX-", 0),
    ("jwt", rb"eyJ", 0),
    ("sk", rb"sk-", 0),
    ("shopify", rb"shp(?:at|ss|ca|pa)_", 0),
    ("sentry", rb"sntry[su]_", 0),
    ("npm", rb"pypi-AgE|npm_", 0),
    ("perplexity", rb"pplx-", 0),
    ("pulumi", rb"pul-", 0),
    ("docker", rb"dckr_(?:pat|oat)_", 0),
    ("digitalocean", rb"do[por]_v1_", 0),
    ("doppler", rb"dp\.(?:pt|st|sa|ct|scim|audit)\.", 0),
    ("databricks", rb"dapi[0-9a-f]", 0),
    ("replicate", rb"r8_", 0),
    ("terraform", rb"\.atlasv1\.", 0),
    ("sendgrid", rb"SG\.", 0),
    ("linear", rb"lin_api_", 0),
    ("postman", rb"PMAK-", 0),
    ("figma", rb"figd_", 0),
    ("newrelic", rb"NR(?:AK|II)-", 0),
    ("azure_secret", rb"Q~", 0),
    (
        "key_body",
        rb"b3BlbnNzaC1rZXktdjE|M(?:II[A-Za-z0-9+/]{3}(?:IBA|B[A-Za-z0-9+/]Bgk)|HcCAQEE"
        rb"|I[GH][A-Za-z0-9+/]AgE|[CE][A-Za-z0-9+/]CAQAw)",
        0,
    ),
    ("email", rb"[A-Za-z0-9._%+-]@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.[A-Za-z0-9]", 1),  # a label and a dot
    ("url", rb"://", 0),
    ("user_opt", rb"-u[ \t]|--user[ \t=]", 0),
    ("password", rb"(?i:pass(?:w|phrase)|pwd)", 0),
    ("aws_secret", rb"(?i:aws_?secret|secret_?access)", 0),  # before "secret", which starts the same way
    ("secret", rb"(?i:secret|token|api[_-]?key|key|credential)", 0),
    ("auth", rb"(?i:bearer|auth)", 0),
    ("card", rb"\b[2-6]\d{3}(?:[ -]\d{4}|\d{9})", 0),  # \b: the exact regexes refuse a word byte before
    ("phone", rb"\b\d{3}[-.]\d{3}[-.]\d{4}|\(\d{3}\)", 0),
    ("ssn", rb"\b\d{3}-\d\d-\d{4}", 0),
    ("plus", rb"\+[1-9][ .-]?\(?\d", 0),
    ("iban", rb"[A-Z]{2}\d\d", 0),
)
# for bastion/masking/hold.py: families whose anchor is a label or an option rather than a token's own
# prefix (strong only with an operator after them), and the personal-data families
KEYWORD_FAMILIES: tuple[str, ...] = ("password", "secret", "auth", "aws_secret", "user_opt")
PII_FAMILIES: tuple[str, ...] = ("email", "card", "phone", "ssn", "plus", "iban")

# Exact patterns -----------------------------------------------------------------------------------

_B = rb"(?<![A-Za-z0-9_])"  # a token starts at a word boundary
_E = rb"(?![A-Za-z0-9_-])"  # ... and a fixed-length one ends at one
_BOUNDED = rb"(?<![A-Za-z0-9_-])"

# Provider tokens: (name, exact regex, anchor family, lead). Each is recognised by its own prefix, with
# or without a label; the keyword detectors below leave a labelled value to them when they match it.
TOKENS: tuple[tuple[str, bytes, str, bytes | None], ...] = (
    ("private-key", rb"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----", "pem", None),
    (
        "aws-key",
        rb"(?<![A-Za-z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        "aws_key",
        None,
    ),
    # Bedrock API keys: long-term ABSK + base64 of "BedrockAPIKey-...", short-term a presigned URL in base64
    (
        "aws-bedrock-key",
        _B + rb"(?:ABSK[A-Za-z0-9+/]{32,400}+={0,2}|bedrock-api-key-[A-Za-z0-9+/]{64,4000}+={0,2})",
        "bedrock",
        None,
    ),
    ("github-token", _B + rb"(?:gh[pousr]_[A-Za-z0-9]{36,251}+|github_pat_[A-Za-z0-9_]{22,251}+)", "github", None),
    (
        "gitlab-token",
        _B + rb"gl(?:pat|dt|rt|ptt|soat|cbt|imt|agent|oas|ft|ffct)-[A-Za-z0-9_-]{20,251}+",
        "gitlab",
        None,
    ),
    ("gitlab-token", _B + rb"GR1348941[A-Za-z0-9_-]{20,64}+", "gitlab_runner", rb"GR"),  # runner registration
    (
        "grafana-token",
        _B + rb"(?:glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|glc_[A-Za-z0-9+/]{32,400}+={0,2})" + _E,
        "grafana",
        None,
    ),
    ("groq-key", _B + rb"gsk_[A-Za-z0-9]{48,64}" + _E, "groq", None),
    (
        "slack-token",
        _B + rb"(?:xox[abposre]-[A-Za-z0-9-]{10,251}+|xoxe\.xox[bp]-\d-[A-Za-z0-9-]{10,251}+"
        rb"|xapp-\d-[A-Za-z0-9-]{10,251}+)",
        "slack",
        None,
    ),
    ("xai-key", _B + rb"xai-[A-Za-z0-9]{60,100}" + _E, "xai", None),
    ("huggingface-token", _B + rb"hf_[A-Za-z0-9]{30,40}" + _E, "huggingface", None),
    ("vault-token", _B + rb"hv[sbr]\.[A-Za-z0-9_-]{24,300}+", "vault", None),
    ("stripe-key", _B + rb"[rs]k_(?:live|test)_[A-Za-z0-9]{10,251}+", "stripe", rb"[rs]"),
    ("stripe-key", _B + rb"whsec_[A-Za-z0-9+/]{24,64}+", "stripe_hook", None),
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
    # Anthropic sk-ant-api03-/sk-ant-admin01-...; OpenAI sk-proj-/sk-svcacct-/sk-admin- and legacy sk-;
    # DeepSeek and others use sk- and 32+ letters and digits too
    ("anthropic-key", _BOUNDED + rb"sk-ant-[a-z]{2,8}\d\d-[A-Za-z0-9_-]{32,251}+", "sk", None),
    (
        "openai-key",
        _BOUNDED + rb"sk-(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,251}+"
        rb"|(?=[A-Za-z0-9]{0,63}\d)[A-Za-z0-9]{32,64}" + _E + rb"|[A-Za-z0-9_-]{20,74}T3BlbkFJ[A-Za-z0-9_-]{20,160}+)",
        "sk",
        None,
    ),
    ("shopify-token", _B + rb"shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}" + _E, "shopify", None),
    ("sentry-token", _B + rb"sntry[su]_[A-Za-z0-9+/=_-]{40,400}+", "sentry", None),
    ("npm-token", _B + rb"npm_[A-Za-z0-9]{36}" + _E, "npm", None),
    ("pypi-token", _B + rb"pypi-AgE[A-Za-z0-9_-]{50,1000}+", "npm", None),
    ("perplexity-key", _B + rb"pplx-[A-Za-z0-9]{40,64}" + _E, "perplexity", None),
    ("pulumi-token", _B + rb"pul-[a-f0-9]{40}" + _E, "pulumi", None),
    ("docker-token", _B + rb"dckr_(?:pat|oat)_[A-Za-z0-9_-]{20,64}+", "docker", None),
    ("digitalocean-token", _B + rb"do[por]_v1_[a-f0-9]{64}" + _E, "digitalocean", None),
    (
        "doppler-token",
        _B + rb"dp\.(?:pt|st|sa|ct|scim|audit)\.(?:[a-z0-9_-]{1,32}\.)?[A-Za-z0-9]{40,44}" + _E,
        "doppler",
        None,
    ),
    ("databricks-token", _B + rb"dapi[a-f0-9]{32}(?:-\d)?" + _E, "databricks", None),
    ("replicate-token", _B + rb"r8_[A-Za-z0-9]{37}" + _E, "replicate", None),
    ("terraform-token", _B + rb"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,120}+", "terraform", rb"[A-Za-z0-9]{14}"),
    ("sendgrid-key", _B + rb"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}" + _E, "sendgrid", None),
    ("linear-key", _B + rb"lin_api_[A-Za-z0-9]{40}" + _E, "linear", None),
    ("postman-key", _B + rb"PMAK-[a-f0-9]{24}-[a-f0-9]{34}" + _E, "postman", None),
    ("figma-token", _B + rb"figd_[A-Za-z0-9_-]{40,64}+", "figma", None),
    ("newrelic-key", _B + rb"NR(?:AK-[A-Z0-9]{27}|II-[A-Za-z0-9_-]{32})" + _E, "newrelic", None),
    ("atlassian-token", _B + rb"ATATT3[A-Za-z0-9_=-]{150,300}+", "atlassian", None),
    # Entra ID (Azure AD) client secrets: three characters, a digit, Q~, 31-34 more
    (
        "azure-secret",
        rb"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])",
        "azure_secret",
        rb"[A-Za-z0-9_~.]{3}\d",
    ),
    ("azure-storage-key", rb"AccountKey=(?P<secret>[A-Za-z0-9+/]{86}==)", "azure_storage", None),
    # a private key's body without its BEGIN line (released earlier, or cut off): the OpenSSH magic, or
    # the DER start of PKCS#1 RSA, PKCS#8 (plain and encrypted), SEC1 EC, Ed25519/X25519/Ed448 keys;
    # not certificates (MII..CCA) or public keys (MII..jAN). The rest is dropped as a key block's body.
    (
        "private-key",
        rb"""(?:(?<=\\n)|(?<![^\s"'>=:]))(?:b3BlbnNzaC1rZXktdjE|M(?:II[A-Za-z0-9+/]{3}(?:IBA(?:AK|DAN)"""
        rb"""|B[A-Za-z0-9+/]BgkqhkiG9w0BBQ)|HcCAQEE|I[GH][A-Za-z0-9+/]AgE(?:AMB[AM]G|BB)"""
        rb"""|[CE][A-Za-z0-9+/]CAQAwBQYDK2V))(?=[A-Za-z0-9+/=]{8})""",
        "key_body",
        None,
    ),
)

# Labelled values ----------------------------------------------------------------------------------

VALUE_BOUND = 16000  # a labelled value is masked whole up to this many characters


def _without_groups(source: bytes) -> bytes:
    return re.sub(rb"\(\?P<[a-z_]+>", b"(?:", source)


# a value that a token detector above matches is left to it (a better label; a key block's body)
_BEARER = rb"(?i:bearer)[ \t]{1,8}(?P<secret>[A-Za-z0-9._~+/-]{16,16000}+={0,2})"
_TOKEN_VALUE = (
    rb"""(?!["']?(?:""" + b"|".join(_without_groups(source) for _, source, _, _ in TOKENS) + rb"|"
    + _without_groups(_BEARER) + rb"))"
)
_NOT_CODE = (
    rb"""(?!["']?(?i:null|none|nil|true|false|undefined|yes|no|on|off|required|optional)(?![A-Za-z0-9_]))"""
    # code: a call, a subscript, an attribute (self.password, Name.Builtin), a type (token: str)
    rb"""(?![A-Za-z_][A-Za-z0-9_]{0,64}(?:\.[A-Za-z_][A-Za-z0-9_]{0,64}){0,8}[(\[])"""
    rb"""(?!["']?(?!eyJ)[A-Za-z_][A-Za-z0-9_]{0,64}(?:\.[A-Za-z_][A-Za-z0-9_]{0,64}){1,8}["']?(?![^ \t\r\n,;)\]}#]))"""
    # ... a keyword (token = await f()), a private name (_process_token), a type (passphrase: BytesOrStr,)
    rb"""(?!(?:await|yield|lambda|new|not|typeof)[ \t])(?!_[A-Za-z0-9_]{0,64}(?![^\s"',;&<>)\]}]))"""
    rb"""(?![A-Z][A-Za-z0-9_]{0,64}[ \t]{0,8}(?:[,)\]|]|=(?!=)))"""
    rb"""(?!(?:str|bytes|int|bool|float|Any|Optional|Union|string|String|number|boolean|object|dict|list"""
    rb"""|SecretStr|char|unknown|any)(?![A-Za-z0-9_.\-/:@]))"""
    # ... a variable named like the label (password = password, token = next_token, api_key=self_key)
    rb"""(?!(?:[A-Za-z0-9]{1,16}_){0,3}[a-z]{0,16}(?i:pass(?:w(?:or)?d|phrase)?|pwd|secret|token|key|auth|cred(?:ential)?s?)"""
    rb"""(?:_[A-Za-z0-9]{1,16}){0,3}(?![A-Za-z0-9_.\-/:@+=]))"""
    # ... an expression (Token = Ignore + PlainToken), or a word assigned in code style (token = result)
    rb"""(?!(?<=[ \t])[A-Za-z_][A-Za-z0-9_]{0,64}[ \t]{1,8}(?:[-+*/|&%<>]|==|!=|if|for|or|and|in|is)[ \t])"""
    rb"""(?!(?<=[ \t]=[ \t])[A-Za-z_]{1,64}[ \t]{0,8}(?![^\r\n,;)#]))"""
    # ... a string that the operator ended (prompt='Password: ', "token: " + x), an f-string, a chained
    # assignment (user = passwd = acct = ''), a value of one or two characters (token = v, 'PW_PASSWD': 1)
    rb"""(?!["'](?:(?![^ \t\r\n),;\]}%])|\+[ \t]|\.[A-Za-z_]{1,32}\())(?![rbfuRBFU]{1,2}["'])"""
    rb"""(?![A-Za-z_][A-Za-z0-9_]{0,64}[ \t]{1,8}=)"""
    rb"""(?![^\s"',;&=<>()\[\]{}$%*][^\s",;&<>]{0,1}(?![^\s",;&<>]))"""
    # placeholders: xxx, ***, ..., <your token>, {{ template }}, ${VAR} inside quotes
    rb"""(?!["']?(?:[xX]{3,64}|\*{3,64}|\.{3}|<[A-Za-z_ -]{1,40}>|\{\{|\$\{)(?![^"' \t\r\n,;&<)\]}]))"""
)
_VALUE = (
    _TOKEN_VALUE + _NOT_CODE
    + rb"""(?:"(?P<quoted>[^"\r\n]{1,%d})|'(?P<single>[^'\r\n]{1,%d})""" % (VALUE_BOUND, VALUE_BOUND)
    + rb"""|(?P<bare>[^\s"',;&=<>()\[\]{}$%%*`][^\s",;&<>]{0,%d}))""" % (VALUE_BOUND - 1)  # a bare value may hold '
)
_VALUE_GROUPS = ("quoted", "single", "bare", "xml")
# the rest of a name after its keyword: DB_PASSWORD_PROD, SECRET_KEY_BASE, api_key_v2, client_secret.value;
# not a name for something else than the secret (password_hash, token_type, secret_name, key_file)
_NAME_REST = (
    rb"""(?:[_.-](?!(?i:hash(?:ed)?|file|path|dir|name|id|ids|type|length|len|size|count|prompt|field|url|uri"""
    rb"""|endpoint|expires?|expiry|expiration|ttl|ref|header|policy|format|min|max|regex|pattern|hint|label"""
    rb"""|mode|required|enabled|placeholder|timeout|provider|version|lifetime|age|limit|method|reset|salt|state|status"""
    rb"""|changed|updated|created|rotation|algorithm|store|storage|manager|source|env|var|fields?|input|class|cls"""
    rb"""|placement|generator|kind|scopes?|factory|handler|callback|getter|setter|validator|serializer|backend"""
    rb"""|loader|prefix|suffix|lookup)"""
    rb"""(?![A-Za-z0-9]))[A-Za-z0-9]{1,24}){0,3}"""
)
# `=`, `:=`, `=>`, Make's `?=`, Go's `var token string = ...`, after an optional closing quote (JSON);
# `:` (YAML, JSON, headers) unless prose follows (`:param token: A Bearer token dict`)
_OPERATOR = (
    rb"""["']?[ \t]{0,8}(?:(?:=>|:=|\?=|=|[ \t](?:string|\[\]byte)[ \t]{0,8}=)[ \t]{0,8}"""
    rb"""|:[ \t]{0,8}(?![A-Za-z]{1,24}[ \t]{1,8}[A-Za-z(]))"""
)
_XML = rb""">(?P<xml>[^<\s]{1,%d})(?=</)""" % VALUE_BOUND  # <apiToken>...</apiToken>
# a generic label (key, auth, credentials) needs a value that looks generated: 8 characters or more of
# base64 or base64url with a letter and a digit, or 16 or more with small letters and two capitals in a
# row (not 1.3.6.1, rsa:3072, 00:00, KeyExchangeFailed)
_LOOKS_GENERATED = (
    rb"""(?=["']?[A-Za-z0-9+/=_~-]{8})(?=["']?[^\s"',;]{0,64}[A-Za-z])(?:(?=["']?[^\s"',;]{0,64}\d)"""
    rb"""|(?=["']?[A-Za-z0-9+/=_~-]{16})(?=["']?[^\s"',;]{0,64}[a-z])(?=["']?[^\s"',;]{0,64}[A-Z]{2}))"""
)
# after `pwd`: not the shell's PWD or OLDPWD (`env`, `export -p`, os.environ): those names, in capitals and
# on their own, set to an absolute path (looked at from after the keyword: the undecided-start search stays fast)
_SHELL_PWD = (
    rb"""(?!(?-i:(?<=PWD)(?<![A-Za-z0-9_]PWD)|(?<=OLDPWD)(?<![A-Za-z0-9_]OLDPWD))["']?[ \t]{0,8}[:=][ \t]{0,8}["']?/)"""
)
# `key` on its own or ending a name (KEY, api_key, AccessKey), not inside a word (monkey, keyboard)
_KEY_WORD = rb"""(?:(?<![A-Za-z])(?i:key)|(?<=[a-z])Key|(?<=[A-Z])KEY)"""

LABELLED: tuple[tuple[str, bytes, str, bytes | None], ...] = (
    (
        "aws-secret",
        rb"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)"
        + rb"""["']?[ \t]{0,8}(?:=>|:=|[:=])[ \t]{0,8}"""
        + rb"""["']?(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])""",
        "aws_secret",
        None,
    ),
    (
        "slack-webhook",
        rb"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/-]{20,251}+)",
        "slack_hook",
        None,
    ),
    (
        # the password runs to the last `@` before the host (passwords may hold `@`); never past a `/`
        "url-password",
        rb"""(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,20}://[^\s:@/?#"'<>]{0,128}:(?P<secret>[^\s/?#"'<>]{1,256})@""",
        "url",
        rb"[A-Za-z][A-Za-z0-9+.-]{0,20}",
    ),
    # curl -u user:password, --user user:password (not a uid:gid, as in docker run -u 1000:1000)
    (
        "password",
        rb"""(?:-u[ \t]{1,8}|--user[ \t=]{1,8})["']?(?!\d{1,10}:\d)[^\s:"'@/]{1,64}:(?P<secret>[^\s"']{1,256})""",
        "user_opt",
        None,
    ),
    ("bearer-token", _BEARER, "auth", None),
    (
        "basic-auth",
        rb"(?i:authorization)" + rb"""["']?[ \t]{0,8}[:=][ \t]{0,8}"""
        + rb"""["']?(?i:basic)[ \t]{1,8}(?P<secret>[A-Za-z0-9+/]{8,1024}+={0,2})""",
        "auth",
        None,
    ),
    (
        # Authorization: Token ..., or a raw key, whatever the scheme (Bearer and Basic have their own)
        "auth-token",
        rb"""(?i:authorization)["']?[ \t]{0,8}[:=][ \t]{0,8}["']?(?!(?i:bearer|basic|digest|negotiate|ntlm)[ \t])"""
        rb"""(?:[A-Za-z][A-Za-z0-9_-]{0,30}[ \t]{1,8})?""" + _TOKEN_VALUE + _NOT_CODE + _LOOKS_GENERATED
        + rb"""(?P<secret>[^\s"',;<>\[]{8,%d})""" % VALUE_BOUND,
        "auth",
        None,
    ),
    (
        "password",
        rb"(?i:passw(?:or)?d|passphrase|pwd" + _SHELL_PWD + rb")" + _NAME_REST
        + rb"(?:" + _OPERATOR + _VALUE + rb"|" + _XML + rb")",
        "password",
        None,
    ),
    (
        "secret",
        rb"(?i:secret|(?<!publicKey)(?<!PublicKey)token|api[_-]?key)" + _NAME_REST
        + rb"(?:" + _OPERATOR + _VALUE + rb"|" + _XML + rb")",
        "secret",
        None,
    ),
    (
        "secret",
        rb"(?:" + _KEY_WORD + rb"|(?i:credentials?))" + _NAME_REST + _OPERATOR + _LOOKS_GENERATED + _VALUE,
        "secret",
        None,
    ),
    (
        "secret",
        rb"(?<![A-Za-z])(?i:auth)" + _NAME_REST + _OPERATOR + _LOOKS_GENERATED + _VALUE,
        "auth",
        None,
    ),
)
SECRETS = TOKENS + LABELLED

PII: tuple[tuple[str, bytes, str, bytes | None], ...] = (
    (
        # not any Luhn-valid run of digits (ids, timestamps): a known issuer's prefix and length, or the
        # digits grouped as cards are printed (4-4-4-4, 4-6-5, 4-6-4)
        "card",
        rb"(?<![\w.-])(?:4\d{12}(?:\d{3}){0,2}|5[1-5]\d{14}|2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}|3[47]\d{13}"
        rb"|3(?:0[0-5]|[68]\d)\d{11}|6(?:011|5\d\d|4[4-9]\d)\d{12}(?:\d{3})?|35(?:2[89]|[3-8]\d)\d{12}(?:\d{3})?"
        rb"|62\d{14,17}"
        rb"|[2-6]\d{3}(?: \d{4}){3}(?: \d{3})?|[2-6]\d{3}(?:-\d{4}){3}(?:-\d{3})?"
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
    (  # a dot before one digit is a decimal point (+35236450.6)
        "phone",
        rb"(?<![\w+])\+[1-9]\d{0,3}(?:[ -]?(?:\(\d{1,4}\)|\d{1,4})|\.\d{2,4}){1,6}(?![\w+]|[.-]\d)",
        "plus",
        None,
    ),
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
    groups = tuple(group for group in (*_VALUE_GROUPS, "secret") if group in pattern.groupindex)
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
