"""Realistic terminal output with fixed seeds: application logs, JSON, code, with secrets and personal data."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from . import MB

WORDS = [
    *("the", "of", "and", "to", "in", "is", "for", "on", "with", "as", "by", "at", "from", "that", "this"),
    *("request", "user", "status", "ok", "failed", "connection", "timeout", "retry", "worker", "started"),
    *("stopped", "cache", "miss", "hit", "upstream", "handler", "queue", "batch", "commit", "rollback", "session"),
]


def secret(rng: random.Random) -> str:
    """One secret or piece of personal data, in the context it usually appears in."""
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

    def token(n: int, chars: str = alnum) -> str:
        return "".join(rng.choice(chars) for _ in range(n))

    choices = (
        lambda: "AKIA" + token(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
        lambda: "aws_secret_access_key = " + token(40, alnum + "/+"),
        lambda: "GITHUB_TOKEN=ghp_" + token(36),
        lambda: "glpat-" + token(20),
        lambda: "xoxb-" + token(12, "0123456789") + "-" + token(24),
        lambda: "sk_live_" + token(24),
        lambda: "AIza" + token(35),
        lambda: "Authorization: Bearer " + token(40),
        lambda: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI" + token(20) + "In0." + token(43),
        lambda: "password=" + token(12),
        lambda: '"client_secret": "' + token(32) + '"',
        lambda: f"postgres://app:{token(16)}@db-{rng.randint(1, 9)}.internal:5432/app",
        lambda: f"{rng.choice(['ana', 'bob', 'li', 'sam'])}.{token(5).lower()}@example.com",
        lambda: "+44 20 7946 " + token(4, "0123456789"),
        lambda: f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
        lambda: "4111 1111 1111 1111",
        lambda: f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
        lambda: "DE89 3704 0044 0532 0130 00",
    )
    return rng.choice(choices)()


def logs(size: int, rng: random.Random, secrets: bool) -> bytes:
    """Application log lines (timestamps, levels, paths, IPs, trace ids, durations); a secret on every 7th."""
    lines, total, i = [], 0, 0
    while total < size:
        i += 1
        line = (
            f"2024-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{i * 7 % 60:02d}.{i % 1000:03d}Z "
            f"{rng.choice(['INFO', 'DEBUG', 'WARN', 'ERROR'])} [{rng.choice(['api', 'worker', 'db'])}-{i % 8}] "
            f"{rng.choice(['GET', 'POST', 'PUT'])} /api/v1/{rng.choice(['users', 'items', 'orders'])}/"
            f"{rng.randint(1, 99999)} status={rng.choice([200, 201, 204, 400, 404, 500])} "
            f"dur={rng.random() * 900:.1f}ms "
            f"ip=10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)} "
            f"trace={rng.getrandbits(128):032x} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        )
        if secrets and i % 7 == 0:
            line += " " + secret(rng)
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()[:size]


def json_objects(size: int, rng: random.Random, secrets: bool) -> bytes:
    """Pretty-printed Kubernetes-style pods (names, uids, labels, images); a secret in every 2nd."""
    items, total, i = [], 0, 0
    while total < size:
        i += 1
        uid = "-".join(f"{rng.getrandbits(bits):0{bits // 4}x}" for bits in (32, 16, 16, 16, 48))
        env = [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}]
        if secrets and i % 2 == 0:
            env.append({"name": "DATABASE_URL", "value": secret(rng)})
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"web-{i:05d}-{rng.getrandbits(20):05x}",
                "namespace": "prod",
                "uid": uid,
                "creationTimestamp": f"2024-03-{1 + i % 28:02d}T10:{i % 60:02d}:00Z",
                "labels": {"app": "web", "tier": rng.choice(["frontend", "backend"])},
            },
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": f"registry.example.internal/web:1.{i % 30}.{i % 7}",
                        "env": env,
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
                    }
                ]
            },
            "status": {"phase": rng.choice(["Running", "Pending"]), "podIP": f"10.1.{i % 255}.{i * 3 % 255}"},
        }
        text = json.dumps(obj, indent=2)
        items.append(text)
        total += len(text) + 2
    return ("[\n" + ",\n".join(items) + "\n]\n").encode()[:size]


def code(size: int, rng: random.Random, secrets: bool) -> bytes:
    """Python-like source (functions, docstrings, comments, literals); a secret after every 2nd function."""
    def name() -> str:
        return "_".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))

    parts, total, i = [], 0, 0
    while total < size:
        i += 1
        fn, arg = name(), name()
        block = (
            f"def {fn}({arg}: int, limit: float = {rng.random():.3f}) -> dict[str, int]:\n"
            f'    """Return the {rng.choice(WORDS)} of {arg}, at most limit per {rng.choice(WORDS)}."""\n'
            f"    # {' '.join(rng.choice(WORDS) for _ in range(8))}\n"
            f"    result = {{}}\n"
            f"    for index, item in enumerate(range({arg})):\n"
            f"        if item % {rng.randint(2, 9)} == 0 and index < limit:\n"
            f'            result[f"{{item}}-{rng.choice(WORDS)}"] = {rng.randint(0, 10**6)}\n'
            f"        elif self.{name()}(item):\n"
            f'            raise ValueError("{" ".join(rng.choice(WORDS) for _ in range(5))}")\n'
            f"    return result\n\n\n"
        )
        if secrets and i % 2 == 0:
            block += f'{name().upper()} = "{secret(rng)}"\n\n'
        parts.append(block)
        total += len(block)
    return "".join(parts).encode()[:size]


def binary(size: int, rng: random.Random, secrets: bool) -> bytes:
    """Random bytes, for reference (secrets is ignored)."""
    return rng.randbytes(size)


# name, generator(size, rng, secrets), the secrets variants bench/masking measures
KINDS: tuple[tuple[str, Callable[[int, random.Random, bool], bytes], tuple[bool, ...]], ...] = (
    ("logs", logs, (False, True)),
    ("json", json_objects, (False, True)),
    ("code", code, (False, True)),
    ("binary", binary, (False,)),
)


def write_text_file(target: Path, size: int, secrets_per_mb: int) -> None:
    """size bytes of logs, JSON and code in turn, 1 MB each, with secrets_per_mb secrets on lines of their own.

    The seeds are fixed, so the file is the same on every run.
    """
    kinds = [generate for name, generate, _ in KINDS if name != "binary"]
    with open(target, "wb") as out:
        left, block = size, 0
        while left > 0:
            rng = random.Random(f"throughput-text-{block}")  # fixed seeds: the same file every run
            text = kinds[block % len(kinds)](MB, rng, False)
            step = MB // secrets_per_mb
            for n in range(secrets_per_mb - 1, -1, -1):  # from the end, so the offsets stay valid
                at = text.find(b"\n", n * step + step // 2) + 1
                if at > 0:
                    text = text[:at] + secret(rng).encode() + b"\n" + text[at:]
            text = text[: min(left, MB)]
            out.write(text)
            left -= len(text)
            block += 1
