#!/usr/bin/env python
"""Render Foggy Cityscapes-style fog (I = R t + L (1 - t), t = exp(-beta * distance)).

    # Cityscapes -> foggy_cityscapes/ (needs cityscapes/disparity and cityscapes/camera)
    python datasets/make_foggy.py cityscapes [--root $DETECTRON2_DATASETS] [--splits train val]
                                             [--betas 0.005 0.01 0.02] [--num-workers N]
    # any folder of images, with a ground-plane distance prior (no depth needed)
    python datasets/make_foggy.py folder --input DIR --output DIR [--beta 0.02]
                                         [--horizon 0.45] [--near-distance 3] [--max-distance 1000]

cityscapes writes <root>/foggy_cityscapes/leftImg8bit_foggy/{split}/{city}/
{city}_{seq}_{frame}_leftImg8bit_foggy_beta_{beta}.png, the names of the published
Foggy Cityscapes, so the foggy_cityscapes_* datasets find them. folder keeps relative
paths and file names; labels are not copied (fog moves no pixel: reuse them as they are).
Existing outputs are kept unless --overwrite. Method and limits: mic_det/datagen/fog.py
and datasets/README.md.
"""
import argparse
import logging
import os
import sys


def _import_fog():
    try:
        from mic_det.datagen import fog
    except ImportError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from mic_det.datagen import fog
    return fog


def _airlight(values):
    if values is None or values == ["auto"]:
        return None
    try:
        floats = [float(v) for v in values]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--atmospheric-light: 'auto', one value or three (R G B), got {values}")
    if len(floats) not in (1, 3) or not all(0.0 <= v <= 1.0 for v in floats):
        raise argparse.ArgumentTypeError("--atmospheric-light: 'auto', one value or three (R G B) in [0, 1]")
    return floats[0] if len(floats) == 1 else floats[::-1]  # RGB -> OpenCV's BGR


def parse_args(argv=None):
    fog = _import_fog()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--num-workers", "-j", type=int, default=1, help="parallel processes (default 1)")
    common.add_argument(
        "--atmospheric-light", nargs="+", default=["auto"], metavar="L",
        help="'auto' (default: per-image dark-channel estimate, He et al.), one grey value "
        "or three values R G B, in [0, 1]",
    )
    common.add_argument("--max-distance", type=float, default=fog.DEFAULT_MAX_DISTANCE,
                        help="metres given to the sky, zero disparity and the horizon (default %(default)s)")
    common.add_argument("--guided-eps", type=float, default=fog.DEFAULT_GUIDED_EPS,
                        help="guided filter regulariser (default %(default)s)")
    common.add_argument("--overwrite", action="store_true", help="re-render images that already exist")

    c = sub.add_parser("cityscapes", parents=[common], help="Cityscapes -> Foggy Cityscapes file layout")
    c.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                   help="datasets root holding cityscapes/ (default: $DETECTRON2_DATASETS, else ./datasets)")
    c.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val", "test"])
    c.add_argument("--betas", nargs="+", default=["0.005", "0.01", "0.02"],
                   help="fog densities in 1/m (default: those of Foggy Cityscapes)")
    c.add_argument("--median", type=int, default=fog.DEFAULT_MEDIAN, choices=[0, 1, 3, 5],
                   help="median filter (px) of the completed distance map, 0: off (default %(default)s)")
    c.add_argument("--guided-radius", type=int, default=fog.DEFAULT_GUIDED_RADIUS,
                   help="radius (px) of the guided filter refining t (image as guide), 0: off (default %(default)s)")
    c.add_argument("--no-sky-labels", action="store_true",
                   help="ignore gtFine *_labelIds.png; find the sky from the missing disparity instead")

    f = sub.add_parser("folder", parents=[common], help="any images, with a ground-plane distance prior")
    f.add_argument("--input", required=True, help="folder of images (searched recursively)")
    f.add_argument("--output", required=True, help="output folder (same relative paths and names)")
    f.add_argument("--beta", type=float, default=0.02, help="fog density in 1/m (default %(default)s)")
    f.add_argument("--horizon", type=float, default=fog.DEFAULT_HORIZON,
                   help="horizon row as a fraction of the height from the top (default %(default)s, "
                   "street scenes: everything above it becomes airlight at beta 0.02); negative: above "
                   "the image, for cameras looking down or indoors, e.g. -0.5 with --beta 0.1")
    f.add_argument("--near-distance", type=float, default=fog.DEFAULT_NEAR_DISTANCE,
                   help="metres at the bottom row (default %(default)s)")
    f.add_argument("--guided-radius", type=int, default=0,
                   help="radius (px) of a guided filter refining t (image as guide); default 0: "
                   "the prior has no edges to align, a filter mostly blurs it near the horizon")
    args = p.parse_args(argv)
    try:
        args.atmospheric_light = _airlight(args.atmospheric_light)
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    fog = _import_fog()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    common = dict(atmospheric_light=args.atmospheric_light, max_distance=args.max_distance,
                  guided_radius=args.guided_radius, guided_eps=args.guided_eps)
    if args.mode == "cityscapes":
        unknown = [b for b in args.betas if fog.format_beta(b) not in ("0.005", "0.01", "0.02")]
        if unknown:
            logging.warning("betas %s are not among Foggy Cityscapes' (0.005, 0.01, 0.02): "
                            "no registered dataset reads them", unknown)
        options = fog.FogOptions(median=args.median, use_sky_labels=not args.no_sky_labels, **common)
        summary = fog.make_foggy_cityscapes(args.root, args.splits, args.betas, options,
                                            args.num_workers, args.overwrite)
        out = os.path.join(args.root, "foggy_cityscapes", "leftImg8bit_foggy")
        print(f"{summary['frames']} frames: wrote {summary['written']} images, kept {summary['skipped']} "
              f"existing -> {out}")
    else:
        options = fog.FogOptions(horizon=args.horizon, near_distance=args.near_distance, **common)
        summary = fog.make_foggy_folder(args.input, args.output, args.beta, options,
                                        args.num_workers, args.overwrite)
        print(f"{summary['images']} images: wrote {summary['written']}, kept {summary['skipped']} "
              f"existing -> {args.output}")
    return summary


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
