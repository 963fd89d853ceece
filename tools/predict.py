#!/usr/bin/env python
"""Run a trained detector on an image, a folder of images or a video.

    python tools/predict.py --config CFG --weights OUTPUT_DIR/model_final.pth --input PATH --output DIR \
        [--which auto|teacher|student] [--score-threshold 0.5] [--classes car person] [KEY VALUE ...]

Writes into DIR the annotated images (same file names) or the annotated video
(<name>.mp4, codec mp4v), and detections.json: COCO-style results, one entry per box,
``{"image_id", "file_name", "category_id", "category_name", "bbox": [x, y, w, h], "score"}``
in the pixels of the input; for a video ``image_id`` (and ``frame``) is the frame index.
``category_id`` is the dataset's id when its metadata maps one (as detectron2's
COCOEvaluator writes them), else the class index. Class names come from the metadata
of DATASETS.TEST[0] (or TRAIN[0]), else ``class_<i>``.
"""
import argparse
import json
import logging
import os
import sys

import cv2

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
from detectron2.utils.logger import setup_logger  # noqa: E402

from mic_det.config import load_config  # noqa: E402
from mic_det.checkpoint import build_detector  # noqa: E402
from mic_det.inference import Predictor, category_ids, class_names, coco_detections, filter_instances  # noqa: E402
from mic_det.utils.drawing import draw_instances  # noqa: E402
from mic_det.utils.io import IMAGE_EXTENSIONS, list_images  # noqa: E402

logger = logging.getLogger("mic_det")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")


def fail(message):
    raise SystemExit(f"error: {message}")


def list_inputs(path: str):
    """("video", [file]) or ("images", [files]); errors name the path."""
    if not os.path.exists(path):
        fail(f"input {path!r} does not exist")
    if os.path.isdir(path):
        files = list_images(path, recursive=False)
        if not files:
            fail(f"folder {path!r} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        return "images", files
    if path.lower().endswith(VIDEO_EXTENSIONS):
        return "video", [path]
    return "images", [path]


def read_image(path: str):
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        fail(f"cannot read image {path!r}: not an image file OpenCV can decode (or unreadable)")
    return image


def predict_images(predictor, files, output, names, ids, select):
    results = []
    for image_id, path in enumerate(files):
        image = read_image(path)
        instances = select(predictor(image))
        name = os.path.basename(path)
        results += coco_detections(instances, names, ids, image_id=image_id, file_name=name)
        if not cv2.imwrite(os.path.join(output, name), draw_instances(image, instances, names)):
            fail(f"cannot write {os.path.join(output, name)!r}")
    logger.info(f"{len(files)} image(s), {len(results)} detection(s)")
    return results


def predict_video(predictor, path, output, names, ids, select):
    capture = cv2.VideoCapture(path)
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        fail(f"cannot read video {path!r}: not a video file OpenCV can decode (or unreadable)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and fps > 0 else 25.0
    name = os.path.basename(path)
    out_path = os.path.join(output, os.path.splitext(name)[0] + ".mp4")
    height, width = frame.shape[:2]
    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        fail(f"cannot write video {out_path!r} with codec mp4v")
    results, index = [], 0
    try:
        while ok:
            instances = select(predictor(frame))
            results += coco_detections(instances, names, ids, image_id=index, frame=index, file_name=name)
            writer.write(draw_instances(frame, instances, names))
            index += 1
            if index % 100 == 0:
                logger.info(f"{name}: {index} frames")
            ok, frame = capture.read()
    finally:
        writer.release()
        capture.release()
    logger.info(f"{name}: {index} frame(s), {len(results)} detection(s) -> {out_path}")
    return results


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, metavar="FILE", help="the training config")
    parser.add_argument("--weights", required=True, metavar="FILE", help="a checkpoint (training or exported)")
    parser.add_argument("--input", required=True, metavar="PATH", help="an image, a folder of images or a video")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--which", choices=("auto", "teacher", "student"), default="auto",
                        help="network to run (auto: the teacher when the checkpoint has one)")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="keep detections with score >= this")
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="keep only these classes (default: all)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser


def main(argv=None):
    """Returns the path of detections.json."""
    args = argument_parser().parse_args(argv)
    setup_logger(name="mic_det")
    if not 0.0 <= args.score_threshold <= 1.0:
        fail(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    kind, files = list_inputs(args.input)
    cfg = load_config(args.config, args.opts)
    # The model itself drops boxes below the threshold, so a low one also gets boxes
    # under detectron2's default 0.05.
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.score_threshold
    names, ids = class_names(cfg), category_ids(cfg)
    keep = None
    if args.classes:
        unknown = [c for c in args.classes if c not in names]
        if unknown:
            fail(f"--classes {unknown} unknown; the model's classes are {names}")
        keep = [names.index(c) for c in args.classes]
    # TEST.DETECTIONS_PER_IMAGE best boxes of the chosen classes, not those of all classes
    # that happen to be chosen ones: the model keeps every box, the filter cuts.
    per_image = cfg.TEST.DETECTIONS_PER_IMAGE
    if keep is not None:
        cfg.TEST.DETECTIONS_PER_IMAGE = -1

    def select(instances):
        return filter_instances(instances, args.score_threshold, keep, per_image)

    out_dir = os.path.abspath(args.output)
    in_dir = os.path.abspath(args.input if kind == "images" and os.path.isdir(args.input) else os.path.dirname(args.input))
    if out_dir == in_dir:
        fail(f"--output {args.output!r} is the input's folder: annotated files would overwrite the inputs")
    os.makedirs(out_dir, exist_ok=True)
    try:
        model, which = build_detector(cfg, args.weights, args.which)
    except (FileNotFoundError, ValueError) as e:
        fail(e)
    logger.info(f"Predicting with the {which}, score >= {args.score_threshold}, classes {args.classes or 'all'}")
    predictor = Predictor(cfg, model)
    if kind == "video":
        results = predict_video(predictor, files[0], out_dir, names, ids, select)
    else:
        results = predict_images(predictor, files, out_dir, names, ids, select)
    path = os.path.join(out_dir, "detections.json")
    with open(path, "w") as f:
        json.dump(results, f)
    logger.info(f"Detections written to {path}")
    return path


if __name__ == "__main__":
    main()
