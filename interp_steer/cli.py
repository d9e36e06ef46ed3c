"""``interp-steer`` command line. Bad input prints one line naming the problem and exits with status 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from interp_steer.errors import InterpSteerError
from interp_steer.validation import check_output_dir, check_output_file


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage + message by default)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _model(args: argparse.Namespace):
    from interp_steer.models import load_model

    return load_model(args.model, device=getattr(args, "device", None), dtype=getattr(args, "dtype", None))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="TransformerLens name, HF folder or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32 (default), bf16 or fp16")


def _write_json_atomic(path: Path, data: Any) -> None:
    from interp_steer.io import write_text_atomic
    from interp_steer.validation import dumps

    write_text_atomic(path, dumps(data, indent=2, ensure_ascii=False))  # strict JSON: NaN/inf → null


def _check_layer(layer: int | None, args: argparse.Namespace, flag: str = "--layer") -> None:
    """A block index in range for the model about to load (read from its config, before the load)."""
    if layer is None:
        return
    from interp_steer.models import layer_count

    n = layer_count(getattr(args, "model", None))
    if layer < 0 or (n is not None and layer >= n):
        raise InterpSteerError(f"{flag} {layer} is out of range: the model has layers 0 … "
                               f"{'n-1' if n is None else n - 1}")


def _check_hook(hook: str, args: argparse.Namespace, flag: str = "--hook") -> None:
    import re

    match = re.fullmatch(r"blocks\.(\d+)\.[A-Za-z0-9_.]+", hook) or re.fullmatch(r"hook_embed|hook_pos_embed", hook)
    if match is None:
        raise InterpSteerError(f"{flag} {hook!r} is not a TransformerLens hook name (e.g. blocks.15.hook_resid_post)")
    if match.groups():
        _check_layer(int(match.group(1)), args, flag)


# --------------------------------------------------------------------------------------------------- main


# interp_steer/commands/<name>.py, each with add_parser(sub): one module per subcommand
_COMMAND_MODULES = ("contrastive", "demo", "generate", "train", "train_sae", "prep_rejected", "evaluate", "compare",
                    "dashboard", "attribute", "patch", "export", "sweep")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="interp-steer", description="Learn, apply and explain steering vectors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"interp_steer.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "command", None) == "contrastive" and args.scale is None:
        args.scale = [4.0]
    try:
        # output locations first: a file where a folder goes (or the reverse) is refused before any work
        if getattr(args, "output_dir", None):
            check_output_dir(args.output_dir)
        if getattr(args, "output", None):
            check_output_file(args.output)
        return int(args.func(args) or 0)
    except InterpSteerError as exc:
        sys.stderr.write(f"interp-steer: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interp-steer: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
