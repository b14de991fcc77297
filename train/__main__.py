"""``python -m train``: train the demo model, export it, measure it (see ``docs/training.md``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from .export import VARIANTS
from .trainer import TrainConfig, config_from_args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train",
                                description="Train the NEP RNN-T (branching encoder, "
                                            "arbitrator, 4-bit QAT, pruning) and export it")
    p.add_argument("--out", default="models", help="directory for the exported models "
                                                   "(default models)")
    p.add_argument("--data", default="build/dataset",
                   help="data set with train/ and validation/ features.npz (default build/dataset)")
    p.add_argument("--work", default="build/train",
                   help="checkpoint, history and plot; a checkpoint there is resumed "
                        "(default build/train)")
    p.add_argument("--testset", default="data/testset",
                   help="held-out WAVs + manifest.tsv measured after training")
    p.add_argument("--status", default=None, help="append one line per epoch to this file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: measured ~10x faster than 2 on a busy "
                        "two-core machine)")
    p.add_argument("--export-only", action="store_true",
                   help="skip training: export and measure the checkpoint in --work")
    p.add_argument("--export-variants", nargs="+", default=None, metavar="VARIANT",
                   choices=sorted(VARIANTS),
                   help="after training, export only these variants of the checkpoint "
                        "into --out (no float model, no demo.json): a variant fine-tuned "
                        f"on its own; choices {', '.join(sorted(VARIANTS))}")
    p.add_argument("--target-saving", type=float, default=None, metavar="F",
                   help="before export, shift the arbitrator's operating point so it saves "
                        "at least this fraction of always-slow compute on the validation "
                        "split (default: as trained)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--stop-at-step", type=int, default=None, metavar="N",
                   help="save and stop after N steps, without exporting (a first stage)")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        d = getattr(defaults, f.name)
        kind = {"train_limit": int, "init": str}.get(f.name, type(d))
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None,
                       help=f"default {d}")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.threads < 1:
        print("error: --threads must be >= 1", file=sys.stderr)
        return 2
    import torch

    from .export import export_variants
    from .finalize import finalize, operating_point
    from .trainer import CHECKPOINT, load_checkpoint_model, train

    torch.set_num_threads(args.threads)
    try:
        cfg = config_from_args(vars(args))
        if not args.export_only:
            train(cfg, data_dir=args.data, work_dir=args.work, status_file=args.status,
                  progress=not args.no_progress, stop_at_step=args.stop_at_step)
            if args.stop_at_step is not None:
                return 0
        if args.export_variants:
            ck = Path(args.work) / CHECKPOINT
            point = operating_point(load_checkpoint_model(ck), cfg, args.data,
                                    args.target_saving)
            paths = export_variants(ck, args.out,
                                    calibration=Path(args.data) / "train" / "features.npz",
                                    variants=args.export_variants, float_model=False,
                                    arbitrator_offset=point["offset"])
            print("wrote " + ", ".join(str(p) for p in paths.values())
                  + f" (arbitrator offset {point['offset']:.4f})")
            return 0
        summary = finalize(work_dir=args.work, out_dir=args.out, data_dir=args.data,
                           testset=args.testset, target_saving=args.target_saving)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = summary["testset"]
    print(f"wrote {args.out}: test-set greedy WER {100 * t['torch']['wer']:.2f}% (torch model), "
          f"deployed 4-bit 50% sparse {100 * t['golden']['wer']:.2f}% (golden pipeline, "
          f"greedy); fast frames {100 * t['torch']['fast_fraction']:.1f}% (torch) vs "
          f"{100 * t['golden']['fast_fraction']:.1f}% (golden)")
    point = summary["arbitrator_operating_point"]
    if point["target_saving"] is not None:
        print(f"arbitrator operating point: fast-logit offset {point['offset']:.4f}, "
              f"{100 * point['saving']:.1f}% of always-slow compute saved on validation "
              f"(target {100 * point['target_saving']:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
