"""The ``unpact`` command line: parses arguments, shows progress, prints errors.

Library code never prints; this module owns the terminal. Bad input ends with a
one-line ``unpact: error: ...`` on stderr and exit status 2.

Each command is one ``add_<name>`` function (its arguments) and one
``cmd_<name>`` function (what it does), registered in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from unpact.errors import UnpactError

EXIT_BAD_INPUT = 2


class CommandError(UnpactError):
    """Raised by a command for bad input it detects itself."""


# ----------------------------------------------------------------------- info


def add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="checkpoint directory, hub id or embedded:<name>")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


def cmd_info(args: argparse.Namespace) -> int:
    from unpact.models import load_model, model_info

    info = model_info(load_model(args.model, device=args.device))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [
        ("model", info["spec"]),
        ("architecture", f"{info['architecture']} ({info['model_type']})"),
        ("layers", info["n_layers"]),
        ("heads", info["n_heads"]),
        ("d_model", info["d_model"]),
        ("d_head", info["d_head"]),
        ("vocabulary", info["d_vocab"]),
        ("context", info["n_ctx"]),
        ("parameters", f"{info['n_params']:,}"),
        ("dtype", info["dtype"]),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


# ----------------------------------------------------------------- registry

#: name -> (help, add-arguments function, run function)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "info": ("print a model's architecture and sizes", add_info, cmd_info),
}


def build_parser() -> argparse.ArgumentParser:
    from unpact import __version__

    parser = argparse.ArgumentParser(
        prog="unpact",
        description="See what LLM unlearning really does to a model: unlearn, attribute, "
        "emphasise, and check for collapse.",
    )
    parser.add_argument("--version", action="version", version=f"unpact {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add, _run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _help, _add, run = COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except UnpactError as exc:
        msg = " ".join(str(exc).split())
        print(f"unpact: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("unpact: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
