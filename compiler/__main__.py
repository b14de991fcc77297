"""``python -m compiler MODEL.npz OUT.nepimg``: compile a model file into a processor image.

Prints the memory map summary; exits with status 1 and a one-line message if the model
cannot be read or does not fit the configured processor.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from golden.model import ModelError, QuantModel, load_model

from .compile import CompileError, compile_model, memory_summary
from .isa import ProcessorConfig


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compiler", description=__doc__.split("\n")[0])
    ap.add_argument("model", help="integer model file (.npz, golden.model.save_model)")
    ap.add_argument("out", help="processor image to write (.nepimg)")
    defaults = ProcessorConfig()
    for name in ("lanes", "program_depth", "weight_depth", "param_depth", "scratch_depth",
                 "desc_depth", "const_depth", "max_rows", "max_cols"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name),
                        help=f"ProcessorConfig.{name} (default {getattr(defaults, name)})")
    ap.add_argument("--no-fuse-lstm", action="store_true",
                    help="emit MATVEC + element-wise LSTM steps instead of LSTM instructions")
    args = ap.parse_args(argv)
    try:
        model = load_model(args.model)
        if not isinstance(model, QuantModel):
            raise ModelError(f"{args.model}: a float model; quantize it first")
        config = ProcessorConfig(**{k: getattr(args, k) for k in (
            "lanes", "program_depth", "weight_depth", "param_depth", "scratch_depth",
            "desc_depth", "const_depth", "max_rows", "max_cols")})
        image = compile_model(model, config, fuse_lstm=not args.no_fuse_lstm)
    except (ModelError, CompileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    data = image.to_bytes()
    with open(args.out, "wb") as f:
        f.write(data)
    print(memory_summary(image))
    print(f"\nwrote {args.out}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
