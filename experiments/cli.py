"""The ``tsrl`` command line: ``train`` (the main job), ``benchmark`` (every tutor on one table), ``evaluate`` (saved
Students on any dataset's test splits), ``family-images`` (example images per manipulation family), ``calibrate`` (what
uniform-weight Students reach on the embedded benchmark), ``preprocess`` (videos to face crops in DeepfakeBench's
layout) and ``teach`` (one tutor taught over many Students).

Each command is a module of :mod:`experiments.commands`, imported only when it is named: ``tsrl --help`` imports none
of them, nor torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from experiments.commands import COMMANDS, Command

USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError)
"""What a command raises for a setting, a file or a directory the user can fix: its message says how."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``tsrl`` parser. Given the arguments it will parse (``argv``), only the command they name gets its options
    (its module imported); without, every command gets them."""
    parser = argparse.ArgumentParser(prog="tsrl", description="Tutor-Student RL curricula for deepfake detection.")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error, not only its message")
    commands = parser.add_subparsers(dest="command", required=True)
    named = _named_command(argv) if argv is not None else None
    for command in COMMANDS:
        subparser = commands.add_parser(command.name, aliases=list(command.aliases), help=command.help)
        if argv is None or command == named:
            _add_command(subparser, command)
    return parser


def _named_command(argv: Sequence[str]) -> Command | None:
    """The command ``argv`` names: its first argument that is not an option (``tsrl`` itself takes flags only)."""
    name = next((argument for argument in argv if not argument.startswith("-")), None)
    return next((command for command in COMMANDS if name in (command.name, *command.aliases)), None)


def _add_command(parser: argparse.ArgumentParser, command: Command) -> None:
    module = importlib.import_module(command.module)
    module.add_arguments(parser)
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of this process (default: 1 on a busy machine or when one of several processes, "
        "else torch's; printed in the run header)",
    )
    parser.set_defaults(handler=module.run, computes=command.computes)


def main(argv: list[str] | None = None) -> None:
    """Run ``tsrl`` with ``argv`` (default: the command line's arguments).

    From the command line, an error the user can fix is printed as its message alone and exits with code 2
    (``--verbose`` shows its traceback instead); a caller passing ``argv`` gets the exception itself.
    """
    args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    if argv is None or args.threads is not None:
        # A caller passing argv (a test, a notebook) keeps its own thread count unless it asks for one.
        import torch

        from experiments.commands.threads import chosen_threads

        threads, why = chosen_threads(args.threads)
        torch.set_num_threads(threads)
        if args.computes:
            print(f"torch threads: {threads} ({why}; --threads N sets it)")
    if argv is not None or args.verbose:
        args.handler(args)
        return
    try:
        args.handler(args)
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        _exit_for_user_error(stop.code)
    except USER_ERRORS as error:
        _exit_for_user_error(f"tsrl {args.command}: {error}")
    except KeyboardInterrupt:
        # Ctrl-C before a run's own stop handling is set up (imports, loading the config or the data): nothing written.
        print(f"\ntsrl {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)


def _exit_for_user_error(message: str) -> None:
    print(f"{message}\n(tsrl --verbose {' '.join(sys.argv[1:])} shows where it was raised)", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
