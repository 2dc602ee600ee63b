"""Packaging facts a user's tooling reads: one version, a license file, the changelog."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import mobilize

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("mobilize") == mobilize.__version__


def test_license_and_changelog_ship_with_the_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert importlib.metadata.metadata("mobilize")["License-Expression"] == "Apache-2.0"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{mobilize.__version__}]" in changelog
