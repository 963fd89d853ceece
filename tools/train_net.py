#!/usr/bin/env python
"""Train or evaluate a domain-adaptive detector (source-only, SADA, MIC).

    python tools/train_net.py --config configs/cs2foggy_mic.yaml [--num-gpus N] [KEY VALUE ...]
    python tools/train_net.py --config configs/cs2foggy_mic.yaml --eval-only MODEL.WEIGHTS out/model_final.pth

What each process does is mic_det.engine.cli.main; this script starts the processes.
"""
import os
import sys

from detectron2.engine import launch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mic_det.engine.cli import argument_parser, main  # noqa: E402

if __name__ == "__main__":
    args = argument_parser().parse_args()
    if not args.config_file:
        raise SystemExit("error: --config FILE is required")
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
