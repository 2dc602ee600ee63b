"""Repairs: small, tested rewrites of the captured program that turn what a converter rejects into an equivalent it
accepts (see docs/repairs.md).

:func:`convert` runs an exporter with them: as is first, then — after a conversion failure — with the repairs the
failure implicates, recording which ran and why. :data:`REPAIRS` is the registry (``mobilize.repair.passes``).
"""

from __future__ import annotations

from mobilize.repair import passes  # noqa: F401 - registers the repairs (no heavy imports at module level)
from mobilize.repair.driver import apply, convert, explain, stage
from mobilize.repair.registry import REPAIRS, Repair, for_format, get, register

__all__ = ["REPAIRS", "Repair", "apply", "convert", "explain", "for_format", "get", "register", "stage"]
