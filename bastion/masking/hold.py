"""Which held bytes the client waits for, and which it is shown at once.

The recording gets only what the masker has decided (`MaskingStream`). The client is shown held bytes
early, so that typing is not delayed, unless they complete a *strong prefix*: text that almost always
starts a secret, such as a provider's token prefix (`AKIA`, `eyJ`, `ghp_`, `sk-proj-`, a `-----BEGIN`
line), a secret's label with its operator (`password=`, `token: `, `Authorization: `, `Bearer `) or a
URL's user part (`https://user:`). For those the client waits until later output decides them, up to
`[masking] strong_hold` (1 s). A bare word, digits or an email's first part are weak: most output that
could start a secret does not, and holding it is what made typed echo lag.
"""

from __future__ import annotations

import re

from bastion.masking.packs import ANCHORS, KEYWORD_FAMILIES, PII_FAMILIES
from bastion.masking.terminal import ESCAPE_SEQUENCE

__all__ = ["STRONG_PREFIX", "strong_prefix_ends_after"]

# anchor families that are weak on their own: personal data, labels (strong with an operator, below), URLs
WEAK_FAMILIES = frozenset({*PII_FAMILIES, *KEYWORD_FAMILIES, "url"})
_LABEL = (
    rb"(?i:pass(?:w(?:or)?d|phrase)|pwd|secret|token|api[_-]?key|key|auth[a-z]{0,16}|credentials?)"
    rb"""[A-Za-z0-9_.-]{0,40}["'>]?[ \t]{0,8}(?:=>|:=|\?=|[:=])"""
)
_SCHEME = rb"(?i:bearer|basic|token)[ \t]"
_URL_USER = rb"://[^\s/?#@\"'<>]{1,128}:"
STRONG_PREFIX = re.compile(
    b"|".join([source for family, source, _ in ANCHORS if family not in WEAK_FAMILIES] + [_LABEL, _SCHEME, _URL_USER])
)
_LONGEST = 256  # a strong prefix is shorter than this; one that ended before the unshown bytes does not count


def strong_prefix_ends_after(held: bytes, shown: int) -> bool:
    """Whether a strong prefix in the visible text of `held` ends in its bytes after the first `shown`."""
    if shown >= len(held):
        return False
    if b"\x1b" in held:
        text, before = ESCAPE_SEQUENCE.sub(b"", held), len(ESCAPE_SEQUENCE.sub(b"", held[:shown]))
    else:
        text, before = held, shown
    return any(match.end() > before for match in STRONG_PREFIX.finditer(text, max(0, before - _LONGEST)))
