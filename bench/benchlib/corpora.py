"""Real text found on this machine, for counting false alarms: Python source and command output.

Neither corpus is meant to hold a secret: the Python standard library's source, and the output of
read-only commands (process list, package lists, directory listings, configuration without secrets),
captured when the benchmark runs. Every masking in them, emails aside, is counted as a false positive
(bench/masking prints them so a person can judge).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

# read-only commands whose output is ordinary terminal output; missing ones are skipped
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("ps", "auxww"),
    ("ls", "-la", "/usr/lib", "/usr/share", "/usr/bin", "/etc"),
    ("ls", "-laR", "/usr/share/doc", "/usr/lib/python3", "/usr/include"),
    ("ls", "-laR", "/usr/share"),
    ("dpkg", "-l"),
    ("env", "-i", "PATH=/usr/bin:/bin", "locale"),
    ("ip", "addr"),
    ("ip", "route"),
    ("find", "/etc", "-maxdepth", "2"),
    ("cat", "/etc/services"),
    ("cat", "/etc/passwd"),
    ("cat", "/etc/group"),
    ("journalctl", "--no-pager", "-n", "5000"),
    ("df", "-h"),
    ("mount",),
    ("apt-cache", "policy"),
    ("apt-cache", "show", "python3", "bash", "coreutils", "openssh-client", "git", "curl", "perl", "gcc", "make"),
    ("getent", "services", "protocols", "passwd"),
    ("uname", "-a"),
    ("free", "-m"),
    ("id",),
    ("dpkg", "-L", "coreutils", "bash", "openssh-client", "python3.11-minimal", "libc6", "git", "curl", "perl"),
    ("dpkg", "-s", "coreutils", "bash", "openssh-client", "libc6", "git", "curl", "perl", "tar", "gzip", "sed"),
    (sys.executable, "-m", "pip", "list", "-v"),
    (sys.executable, "-m", "pip", "show", "-f", "pytest", "hypothesis", "pydantic"),
    ("stat", "/etc/hosts", "/etc/os-release", "/usr/bin/python3"),
    ("cat", "/etc/os-release"),
    ("ss", "-tan"),
    ("sysctl", "-a"),
)


def python_source(limit: int) -> bytes:
    """Up to `limit` bytes of the standard library's .py files (sorted, so the same on every run)."""
    root = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    if not root.is_dir():
        root = Path(f"/usr/lib/python{sys.version_info[0]}.{sys.version_info[1]}")
    parts: list[bytes] = []
    total = 0
    for name in sorted(glob.glob(str(root / "**" / "*.py"), recursive=True)):
        if "site-packages" in name or "dist-packages" in name:
            continue
        try:
            data = Path(name).read_bytes()
        except OSError:
            continue
        parts.append(data)
        total += len(data)
        if total >= limit:
            break
    return b"".join(parts)[:limit]


def command_output(limit: int) -> bytes:
    """The output of COMMANDS, run now (each at most 2 MB and 20 s), up to `limit` bytes in all."""
    parts: list[bytes] = []
    total = 0
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}
    for command in COMMANDS:
        if shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run(command, capture_output=True, timeout=20, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        out = (b"$ " + " ".join(command).encode() + b"\n" + done.stdout + done.stderr)[: 3 * 1024 * 1024]
        parts.append(out)
        total += len(out)
        if total >= limit:
            break
    return b"".join(parts)[:limit]
