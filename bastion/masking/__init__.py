"""Masking of secrets and personal data in output, before the client or the recording sees it."""
