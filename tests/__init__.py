"""Tests: unit tests of the pure core beside end-to-end tests with real OpenSSH and sshd."""
