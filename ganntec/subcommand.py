"""The shape every `ganntec <group>` module shares (admin, deploy, tune): one subcommand tree,
hung under the `ganntec` parser (dispatching through `func`) or parsed on its own for
`python -m ganntec.<module>`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Build = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


def add(subparsers, name: str, help: str, doc: str | None, build: Build, run: Run,
        parents: tuple[argparse.ArgumentParser, ...] = ()) -> argparse.ArgumentParser:
    """`name` under the `ganntec` command's subparsers; `ganntec` then calls `run(args)`."""
    parser = subparsers.add_parser(name, help=help, description=doc, parents=list(parents),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    build(parser)
    parser.set_defaults(func=run)
    return parser


def standalone(prog: str, doc: str | None, build: Build,
               parents: tuple[argparse.ArgumentParser, ...] = ()) -> argparse.ArgumentParser:
    """The same tree as its own command line (`prog` names it in usage and errors)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, parents=list(parents),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    build(parser)
    return parser


def main(parser: argparse.ArgumentParser, run: Run, argv: list[str] | None) -> int:
    """Parse `argv` and run it; argparse's --help (0) and usage errors (2) as exit codes."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return run(args)
