"""One structured line (JSON) on stderr per connection, authentication, channel and session."""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def log(event: str, **fields: Any) -> None:
    record = {"ts": round(time.time(), 3), "event": event, **fields}
    sys.stderr.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
    sys.stderr.flush()
