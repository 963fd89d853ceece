#!/usr/bin/env python
"""Parse the Cityscapes gtFine annotations once and write the annotation caches that
mic_det's Cityscapes / Foggy Cityscapes loaders use.

    python datasets/prepare_cityscapes.py [--root $DETECTRON2_DATASETS] [--splits train val]
                                          [--datasets NAME ...] [--num-workers 8]

One COCO-style json per dataset, file names relative to the root (the root can be moved):
    <root>/cityscapes/annotations/mic_det_cityscapes_fine_{train,val}.json
    <root>/foggy_cityscapes/annotations/mic_det_foggy_cityscapes_{train,val}.json
    <root>/foggy_cityscapes/annotations/mic_det_foggy_cityscapes_all_betas_{train,val}.json
Re-run it after changing the data; delete a cache to go back to parsing on every load.
See datasets/README.md.
"""
import argparse
import logging
import os
import sys
from collections import Counter


def _import_cityscapes():
    try:
        from mic_det.data import cityscapes
    except ImportError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from mic_det.data import cityscapes
    return cityscapes


def parse_args(argv=None):
    cs = _import_cityscapes()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--root",
        default=os.getenv("DETECTRON2_DATASETS", "datasets"),
        help="datasets root holding cityscapes/ and foggy_cityscapes/ "
        "(default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    p.add_argument("--splits", nargs="+", default=list(cs.SPLITS), choices=list(cs.SPLITS))
    p.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        choices=sorted(cs.CITYSCAPES_DA_DATASETS),
        help="only these datasets (default: all of the chosen splits)",
    )
    p.add_argument(
        "--num-workers", "-j", type=int, default=1,
        help="processes parsing annotations in parallel (default 1: no multiprocessing)",
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cs = _import_cityscapes()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = cs.prepare_caches(args.root, args.splits, args.datasets, args.num_workers)
    for name, path in written.items():
        dicts = cs.read_cache(args.root, name)
        counts = Counter(cs.CITYSCAPES_DA_CLASSES[a["category_id"]] for d in dicts for a in d["annotations"])
        per_class = ", ".join(f"{c}={counts.get(c, 0)}" for c in cs.CITYSCAPES_DA_CLASSES)
        print(f"{name}: {len(dicts)} images, {sum(counts.values())} boxes ({per_class}) -> {path}")
    return written


if __name__ == "__main__":
    try:
        main()
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
