"""The ``jaxsae`` command line: one small module per subcommand.

Each subcommand module provides ``NAME``, ``HELP``, ``EPILOG`` (examples),
``add_arguments(parser)`` and ``run(args) -> int``, and only calls the public
API. User errors (``ValueError``, ``OSError`` such as missing or unwritable
paths, ``NotImplementedError``) print one line and exit with
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from . import _certify, _convert, _convex, _data, _demo, _diagnose, _sweep, _train

# Subcommands, in the order `jaxsae --help` lists them.
COMMANDS = [_demo, _train, _certify, _diagnose, _data, _convert, _convex, _sweep]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxsae",
        description="Certified optimality for sparse dictionaries and sparse autoencoders.",
        epilog="Run `jaxsae COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--float32", action="store_true", help="compute in float32 (default: float64)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.HELP,
            epilog=module.EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    import jax

    jax.config.update("jax_enable_x64", not args.float32)
    try:
        return int(args._run(args) or 0)
    # ValueError covers json.JSONDecodeError; OSError covers missing, unreadable and
    # unwritable paths (FileNotFoundError, PermissionError, IsADirectoryError, ...).
    except (ValueError, OSError, KeyError, NotImplementedError) as err:
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"jaxsae {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxsae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
