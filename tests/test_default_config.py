"""The repository's bastion.toml is a working configuration."""

from __future__ import annotations

import shutil
from pathlib import Path

from bastion import config

ROOT = Path(__file__).parent.parent


def test_default_configuration_loads(tmp_path: Path) -> None:
    shutil.copy(ROOT / "bastion.toml", tmp_path / "bastion.toml")
    (tmp_path / "state" / "demo").mkdir(parents=True)
    (tmp_path / "state" / "demo" / "known_hosts").write_text("")
    settings = config.load(tmp_path / "bastion.toml")
    assert [h.name for h in settings.hosts] == ["mcp-host", "build-host"]
    assert settings.server.state_dir == tmp_path / "state"
