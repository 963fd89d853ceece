"""The synthetic clear -> foggy shift on disk: rendered once (scenes.py), cached under
``<root>/synthetic_shift/``, and regenerated only when the generator or its parameters
change::

    {clear,foggy}/{train,val}/000000.png ...
    annotations/{clear,foggy}_{train,val}.json      # COCO, category ids 1..K
    VERSION                                         # generator version + parameters

* SOURCE domain ``clear``: the scenes as rendered.
* TARGET domain ``foggy``: *different* scenes (different seeds), fogged.

The set is built in a temporary directory that is renamed into place, under a file lock,
so several processes (e.g. the ranks of ``detectron2.engine.launch``) can ask for it
concurrently and none ever reads a half-written set. A ``VERSION`` that does not match
the current generator and parameters makes it regenerate. From the command line::

    python -m mic_det.datagen.synthetic_shift --root DIR
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from typing import Optional, Sequence, Tuple

import cv2

from . import scenes

try:  # POSIX only; without it the atomic rename alone guards readers.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

logger = logging.getLogger(__name__)

SYNTHETIC_CLASSES = scenes.CLASSES
# Bump whenever the rendered output changes: a cache written by another version is
# regenerated instead of being reused.
GENERATOR_VERSION = 1
DATASET_DIRNAME = "synthetic_shift"
DOMAINS = ("clear", "foggy")
SPLITS = ("train", "val")
# The harder target domain (scenes.py, "dusk"), a set of its own so that the clear ->
# foggy set above stays as it is and is generated without it.
DUSK_DIRNAME = "synthetic_dusk"
DUSK_DOMAINS = ("dusk",)
# Bump whenever the dusk style (scenes.py) changes: the clear -> foggy set keeps its cache.
DUSK_VERSION = 2
# Each domain draws its scenes from its own seeds: the target's scenes are not the source's.
DOMAIN_INDEX = {"clear": 0, "foggy": 1, "dusk": 2}

DEFAULT_IMAGE_SIZE = (160, 320)  # (H, W)
DEFAULT_NUM_TRAIN = 600
DEFAULT_NUM_VAL = 100
DEFAULT_SEED = 0


# ---------------------------------------------------------------- writing the set
def _categories():
    return [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(SYNTHETIC_CLASSES)]


def shift_params(image_size, num_train, num_val, seed, domains: Sequence[str] = DOMAINS) -> dict:
    H, W = (int(v) for v in image_size)
    if H < 32 or W < 32:
        raise ValueError(f"image_size {image_size} too small (need at least 32x32)")
    params = {
        "generator": "mic_det.data.synthetic",
        "version": GENERATOR_VERSION,
        "image_size": [H, W],
        "num_train": int(num_train),
        "num_val": int(num_val),
        "seed": int(seed),
        "classes": list(SYNTHETIC_CLASSES),
    }
    if tuple(domains) != DOMAINS:  # the clear -> foggy set's stamp stays as it always was
        params["domains"] = list(domains)
    if "dusk" in domains:
        params["dusk_version"] = DUSK_VERSION
    return params


def _domains(params: dict) -> Tuple[str, ...]:
    return tuple(params.get("domains", DOMAINS))


def _write_split(out: str, domain: str, split: str, n: int, H: int, W: int, seed: int) -> dict:
    img_dir = os.path.join(out, domain, split)
    os.makedirs(img_dir, exist_ok=True)
    d_idx, s_idx = DOMAIN_INDEX[domain], SPLITS.index(split)
    images, annotations = [], []
    for i in range(n):
        img, scene, fog = scenes.make_image((seed, d_idx, s_idx, i), H, W, domain)
        name = f"{i:06d}.png"
        if not cv2.imwrite(os.path.join(img_dir, name), img[:, :, ::-1]):
            raise OSError(f"could not write {os.path.join(img_dir, name)}")
        entry = {"id": i + 1, "file_name": name, "height": H, "width": W, "horizon": scene.horizon}
        if fog is not None:
            entry.update(fog)
        images.append(entry)
        for o in scene.objects:
            x0, y0, x1, y1 = o.box
            bw, bh = x1 - x0 + 1, y1 - y0 + 1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": o.category + 1,
                    "bbox": [float(x0), float(y0), float(bw), float(bh)],
                    "area": float(bw * bh),
                    "iscrowd": 0,
                    "depth": round(o.depth, 4),
                }
            )
    coco = {
        "info": {
            "description": f"mic_det synthetic shift, domain {domain}, split {split}",
            "version": str(GENERATOR_VERSION),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": _categories(),
    }
    with open(os.path.join(out, "annotations", f"{domain}_{split}.json"), "w") as f:
        json.dump(coco, f, sort_keys=True, separators=(",", ":"))
    return coco


def _generate_into(out: str, params: dict) -> None:
    H, W = params["image_size"]
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    for domain in _domains(params):
        for split in SPLITS:
            n = params["num_train"] if split == "train" else params["num_val"]
            _write_split(out, domain, split, n, H, W, params["seed"])
    with open(os.path.join(out, "VERSION"), "w") as f:  # written last
        json.dump(params, f, sort_keys=True, indent=1)
        f.write("\n")


def synthetic_shift_dir(root: str, dirname: str = DATASET_DIRNAME) -> str:
    """The dataset directory ``<root>/synthetic_shift`` (or ``<root>/<dirname>``)."""
    return os.path.join(root, dirname)


def _is_current(path: str, params: dict) -> bool:
    try:
        with open(os.path.join(path, "VERSION")) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return False
    if found != params:
        return False
    return all(
        os.path.isfile(os.path.join(path, "annotations", f"{d}_{s}.json")) for d in _domains(params) for s in SPLITS
    )


@contextlib.contextmanager
def _lock(root: str, dirname: str):
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(os.path.join(root, f".{dirname}.lock"), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def generate_synthetic_shift(
    root: str,
    image_size: Tuple[int, int] = DEFAULT_IMAGE_SIZE,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = DEFAULT_SEED,
    force: bool = False,
    dirname: str = DATASET_DIRNAME,
    domains: Sequence[str] = DOMAINS,
) -> str:
    """Make sure ``<root>/synthetic_shift`` holds the set for these parameters and return
    its path. Nothing is done when an up-to-date set (same generator version and
    parameters, per its ``VERSION``) is there, unless ``force``. Safe to call from several
    processes at once: the set is built in a temporary directory and renamed into place.
    ``dirname`` and ``domains`` name another set: ``DUSK_DIRNAME``, ``DUSK_DOMAINS`` for
    the harder target."""
    params = shift_params(image_size, num_train, num_val, seed, domains)
    path = synthetic_shift_dir(root, dirname)
    if not force and _is_current(path, params):
        return path
    os.makedirs(root, exist_ok=True)
    with _lock(root, dirname):
        if not force and _is_current(path, params):  # another process made it meanwhile
            return path
        tmp = os.path.join(root, f".{dirname}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        start = time.perf_counter()
        try:
            _generate_into(tmp, params)
            if os.path.exists(path):
                if not force and _is_current(path, params):  # lost a race with an unlocked writer
                    shutil.rmtree(tmp, ignore_errors=True)
                    return path
                stale = os.path.join(root, f".{dirname}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
                os.rename(path, stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, path)
            except OSError:
                if _is_current(path, params):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return path
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info(
        "Generated the synthetic set %s (%s) in %s in %.1fs",
        "/".join(_domains(params)),
        ", ".join(f"{k}={params[k]}" for k in ("image_size", "num_train", "num_val", "seed")),
        path,
        time.perf_counter() - start,
    )
    return path


# ---------------------------------------------------------------- command line
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Generate the synthetic clear -> foggy shift (and the dusk target).")
    ap.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                    help="datasets root; the set goes to ROOT/synthetic_shift (the dusk set to ROOT/synthetic_dusk)")
    ap.add_argument("--height", type=int, default=DEFAULT_IMAGE_SIZE[0])
    ap.add_argument("--width", type=int, default=DEFAULT_IMAGE_SIZE[1])
    ap.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    ap.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--dusk", action="store_true", help="also the harder target domain, dusk")
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = ap.parse_args(argv)
    sets = [(DATASET_DIRNAME, DOMAINS)] + ([(DUSK_DIRNAME, DUSK_DOMAINS)] if args.dusk else [])
    for dirname, domains in sets:
        start = time.perf_counter()
        path = generate_synthetic_shift(args.root, (args.height, args.width), args.num_train, args.num_val,
                                        args.seed, force=args.force, dirname=dirname, domains=domains)
        print(f"synthetic {'/'.join(domains)} at {path} ({time.perf_counter() - start:.1f}s)")
        for domain in domains:
            for split in SPLITS:
                with open(os.path.join(path, "annotations", f"{domain}_{split}.json")) as f:
                    coco = json.load(f)
                per_class = {n: 0 for n in SYNTHETIC_CLASSES}
                for a in coco["annotations"]:
                    per_class[SYNTHETIC_CLASSES[a["category_id"] - 1]] += 1
                counts = " ".join(f"{k}={v}" for k, v in per_class.items())
                print(f"  synthetic_{domain}_{split}: {len(coco['images'])} images, "
                      f"{len(coco['annotations'])} boxes ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
