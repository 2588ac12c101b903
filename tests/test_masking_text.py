"""`Masker.mask_text` (stored text, strings inside MCP messages) skips the scan when no anchor is in the
text; it must give exactly what the full masker gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.masking.config import MaskingSettings
from bastion.masking.masker import Masker

MASKER = Masker.from_settings(MaskingSettings())
PIECES = st.sampled_from(
    ["AKIAIOSFODNN7EXAMPLE", "jane.doe@example.org", "password=hunter2", "ghp_" + "a1B2" * 9, "4111 1111 1111 1111",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghijkl", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n", " ", "\n",
     "mcp", "token", ":", "=", "https://u:p@h/", "+1 415 555 0100", "\x1b[31m", "é", "\ud800"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES | st.text(max_size=12), max_size=8).map("".join))
def test_mask_text_is_the_full_masker(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    full = MASKER.mask(data)[0].decode("utf-8", "surrogatepass")
    assert MASKER.mask_text(text) == full


def test_text_without_anything_to_mask_comes_back_as_it_was() -> None:
    for text in ("mcp", "touched held-1", "", "plain words, numbers 12 and punctuation."):
        assert MASKER.mask_text(text) is text


def test_a_masker_without_detectors_leaves_text_alone() -> None:
    empty = Masker.from_settings(MaskingSettings(packs=()))
    assert empty.mask_text("AKIAIOSFODNN7EXAMPLE") == "AKIAIOSFODNN7EXAMPLE"
    assert empty.prefilter.hits(b"AKIAIOSFODNN7EXAMPLE", 0) == {}
