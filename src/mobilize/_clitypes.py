"""Click parameter types shared by every ``mobilize`` subcommand."""

from __future__ import annotations

from typing import Any

import click


class PathArg(click.Path):
    """:class:`click.Path` that refuses a path holding a NUL byte with mobilize's one-line error naming the option
    (click's own check calls ``os.stat``, which raises a bare ``ValueError`` for it)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from mobilize.safeio import refuse_nul

        refuse_nul(value, param.get_error_hint(ctx).strip("'") if param is not None and ctx is not None else "")
        return super().convert(value, param, ctx)
