"""Masking of secrets and personal data in output, before the client or the recording sees it.

masker.py: `Masker` and `MaskingStream` (pure); packs.py, scan.py, regex.py, terminal.py: the
detectors and how output is scanned; output.py: a session's output over time; values.py: JSON and
environment values; config.py: the `[masking]` table.
"""
