"""The ``dblocks`` subcommands, one module per group; :mod:`diffusionblocks.cli` parses the
command line and dispatches here."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad command-line input that argparse cannot catch."""


def command_line(argv: list[str]) -> str:
    """The command as a user would type it (``dblocks ...``), shell-quoted."""
    import shlex

    return " ".join(["dblocks", *(shlex.quote(a) for a in argv)])
