#!/usr/bin/env python
"""Accuracy, speed and memory of training, measured by running the real trainer.

    python tools/benchmark.py accuracy [--shifts synthetic,cctv_fog] [--seeds 0,1,2] [--iters N] [--dry-run]
    python tools/benchmark.py speed --config configs/demo_mic.yaml --iters 20 --out speed.json
    python tools/benchmark.py memory --config configs/demo_mic.yaml --iters 300 --out memory.json

`accuracy`: source-only, SADA, MIC and a target-labelled oracle trained with the same
model and schedule on each domain shift, over several seeds; AP50 mean +- std and the
fraction of the source-only -> oracle gap each method closes (OUTPUT_DIR/accuracy.json,
.md, .png). See docs/benchmark.md and mic_det/benchmark/.

`speed`: source-only, SADA and MIC training steps in one process at the same settings
(same config, data, batch sizes), after warm-up: seconds per iteration, peak memory (host
RSS on CPU, torch.cuda.max_memory_allocated on GPU) and the ratios to source-only and
to SADA.
`memory`: one mode (the config as it is) for many iterations, host RSS (and CUDA
allocated memory) sampled along the way, to show it stays flat after warm-up.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository

from mic_det.benchmark import accuracy, speed  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    spd = sub.add_parser("speed", help="seconds per iteration and peak memory of each mode")
    spd.add_argument("--config", required=True)
    spd.add_argument("--iters", type=int, default=20)
    spd.add_argument("--warmup", type=int, default=5)
    spd.add_argument("--modes", default="source_only,sada,mic",
                     help="comma-separated, from " + ", ".join(speed.MODES) + " (default %(default)s)")
    spd.add_argument("--out", default="")
    spd.add_argument("opts", nargs=argparse.REMAINDER)
    mem = sub.add_parser("memory", help="host (and CUDA) memory over many iterations")
    mem.add_argument("--config", required=True)
    mem.add_argument("--iters", type=int, default=300)
    mem.add_argument("--every", type=int, default=25)
    mem.add_argument("--out", default="")
    mem.add_argument("opts", nargs=argparse.REMAINDER)
    acc = sub.add_parser(
        "accuracy", help="AP50 of source-only / SADA / MIC / oracle over seeds, and the gap each closes",
        description=accuracy.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    accuracy.add_arguments(acc)
    args = parser.parse_args()

    if args.command == "accuracy":
        args.argv = sys.argv[2:]
        sys.exit(accuracy.run_benchmark(args))

    if args.command == "memory":
        speed.run_memory(args)
        return

    speed.run_speed(args)


if __name__ == "__main__":
    main()
