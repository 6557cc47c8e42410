"""The ``protocol`` object every results JSON under docs/results carries (docs/protocol.md §5):
how the numbers in the file were chosen and reported, over how many seeds, against which
baselines, by which command, and the ways the run departs from the protocol. The scripts in this
folder build it from their own arguments, so regenerating a published file keeps it.

    from protocol import add_caveat_argument, protocol

    parser = argparse.ArgumentParser()
    add_caveat_argument(parser)
    args = parser.parse_args(argv)
    record = {"protocol": protocol(selected_on="val", reported_on="val", seeds=3,
                                   baselines=["e2e"], caveats=args.caveat, argv=argv,
                                   script=__file__), ...}

The scripts run as ``python scripts/experiments/NAME.py``, so this folder is ``sys.path[0]``;
tests that load a script by its path put the folder on ``sys.path`` themselves (each script does
too, before importing this module).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

FOLDER = "scripts/experiments"


def command(script: str | None = None, argv: Sequence[str] | None = None,
            preceded_by: str | None = None) -> str:  # fmt: skip
    """``python scripts/experiments/NAME.py ARGS``: the command line that ran ``script`` (a path or
    a file name; default ``sys.argv[0]``) with ``argv`` (default ``sys.argv[1:]``), shell-quoted;
    ``preceded_by`` (e.g. the shell script that trained the runs a report reads) is joined in
    front with ``&&``."""
    name = Path(script if script is not None else sys.argv[0]).name
    args = list(argv if argv is not None else sys.argv[1:])
    line = " ".join(["python", f"{FOLDER}/{name}", *([shlex.join(args)] if args else [])])
    return f"{preceded_by} && {line}" if preceded_by else line


def protocol(
    *,
    selected_on: str,
    reported_on: str,
    seeds: int,
    baselines: Iterable[str],
    caveats: Iterable[str] | None = (),
    argv: Sequence[str] | None = None,
    script: str | None = None,
    preceded_by: str | None = None,
) -> dict[str, Any]:
    """The protocol object, keys in the published order.

    selected_on: the split whose numbers chose something ("val"), or "none (why)" when the
        numbers choose nothing.
    reported_on: the split the numbers in the file are read on ("val", "test", "val and test"),
        or "none: what is measured instead" (timings, memory, counts).
    seeds: the number of independent training runs (seeds) behind each number; repeats of a
        timing are not seeds.
    baselines: what the file compares against (methods, readouts, reference rows).
    caveats: the ways the file departs from the protocol; the script's own, then the ones given
        with ``--caveat`` (those specific to one published run).
    argv, script, preceded_by: the command line (see :func:`command`).
    """
    return {
        "selected_on": selected_on,
        "reported_on": reported_on,
        "seeds": int(seeds),
        "baselines": list(baselines),
        "command": command(script, argv, preceded_by),
        "caveats": list(caveats or ()),
    }


def seeds_per_method(rows: Iterable[dict[str, Any]]) -> int:
    """The ``seeds`` of a table of runs: the fewest distinct seeds any method has (a number in the
    table rests on at least that many independent runs); 0 for no rows."""
    seeds: dict[str, set[Any]] = {}
    for row in rows:
        seeds.setdefault(str(row["method"]), set()).add(row["seed"])
    return min((len(s) for s in seeds.values()), default=0)


def add_caveat_argument(parser: argparse.ArgumentParser) -> None:
    """A repeatable ``--caveat TEXT`` (as ``dblocks compare --caveat``): a way this run departs
    from the protocol, recorded in the JSON's ``protocol.caveats`` after the script's own."""
    parser.add_argument(
        "--caveat",
        action="append",
        default=[],
        metavar="TEXT",
        help="a way this run departs from the protocol (e.g. a setting chosen after seeing "
        "test, a diagnostic row added later); recorded in the JSON's protocol.caveats",
    )
