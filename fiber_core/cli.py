"""The ``fiber`` command. Backends add subcommands through the entry-point group
``fiber.commands``: each entry point is a function that receives argparse's
subparsers object and adds its parser (with ``set_defaults(func=...)``)."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import metadata
from typing import List, Optional

from fiber_core import context, plugins
from fiber_core.config import ConfigError

COMMANDS_GROUP = "fiber.commands"
logger = logging.getLogger("fiber")


def _backends(args: argparse.Namespace) -> int:
    """Print the installed backends, their order, and which one applies here."""
    registry = plugins.registry()
    ordered = registry.ordered()
    if not ordered:
        print(f"no backends installed; pip install {plugins.distribution_for('local')}")
        return 1
    try:
        chosen = registry.select(args.backend or context.resolve_config().backend).name
    except (plugins.BackendError, ConfigError) as error:
        chosen, problem = None, str(error)
    else:
        problem = ""
    rows = [("NAME", "DISTRIBUTION", "VERSION", "PRIORITY", "APPLIES", "")]
    for backend in ordered:
        applies = "error" if backend.error or backend.rivals else (
            "yes" if backend.applies() else "no")
        rows.append((backend.name, backend.distribution, backend.version,
                     str(backend.priority), applies,
                     "<- selected" if backend.name == chosen else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for backend in ordered:
        if backend.error or backend.rivals:
            try:
                backend.check_usable()
            except plugins.BackendError as error:
                print(f"\n{error}")
    if problem:
        print(f"\nno backend selected: {problem}")
        return 1
    return 0


def _add_plugin_commands(subparsers: argparse._SubParsersAction) -> None:
    for dist in metadata.distributions():
        for entry_point in dist.entry_points:
            if entry_point.group != COMMANDS_GROUP:
                continue
            try:
                entry_point.load()(subparsers)
            except Exception as error:
                logger.warning("fiber command %r from %s failed to load: %s",
                               entry_point.name, dist.metadata["Name"], error)


def parser() -> argparse.ArgumentParser:
    """The ``fiber`` argument parser, with every installed subcommand."""
    top = argparse.ArgumentParser(prog="fiber", description=__doc__.split(".")[0])
    subparsers = top.add_subparsers(dest="command", metavar="COMMAND")
    backends = subparsers.add_parser(
        "backends", help="list installed backends and the one that would be used")
    backends.add_argument("--backend", default=None,
                          help="check this backend instead of detecting one")
    backends.set_defaults(func=_backends)
    _add_plugin_commands(subparsers)
    return top


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``fiber`` console script."""
    logging.basicConfig(format="fiber: %(message)s")
    args = parser().parse_args(argv)
    if not getattr(args, "func", None):
        parser().print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
