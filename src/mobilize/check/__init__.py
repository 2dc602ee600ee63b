"""``mobilize check``: the CI gate after retraining — a config file, one command, exit code 0/1/2, JUnit XML, a
Markdown summary and a committed baseline to compare against (docs/ci.md).

Python API::

    from mobilize import check
    result = check.run("mobilize.toml")          # -> CheckResult; writes the bundle, check.json, junit.xml, summary.md
    result.exit_code, [(a.label, c.name, c.message) for a, c in result.failed]
"""

from __future__ import annotations

from mobilize.check.config import Config
from mobilize.check.config import load as load_config
from mobilize.check.judge import ArtifactResult, Check
from mobilize.check.pipeline import CheckResult, run

__all__ = ["ArtifactResult", "Check", "CheckResult", "Config", "load_config", "run"]
