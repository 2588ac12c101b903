"""The session bridge's own rules: which sessions carry file contents (counted, not recorded or masked)."""

from __future__ import annotations

import pytest

from bastion.ssh.session import is_transfer


@pytest.mark.parametrize(
    ("command", "subsystem", "expected"),
    [
        ("scp -t /tmp", None, True),
        ("scp -f report.pdf", None, True),
        (None, "sftp", True),
        ("scp -h; cat .env", None, False),  # a shell line that starts with scp is not a transfer
        ("scp -f x && cat .env", None, False),
        ("scp $(cat .env)", None, False),
        ("cat file", None, False),
        ("scp", None, False),
    ],
)
def test_what_counts_as_a_file_transfer(command: str | None, subsystem: str | None, expected: bool) -> None:
    assert is_transfer(command, subsystem) is expected
