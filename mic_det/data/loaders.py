"""Training data: a labelled source stream and an unlabelled target stream, paired per
step. Target annotations are removed before the loader is built, so nothing that
consumes the target stream (sampler, mapper, model) can ever see them."""
import logging
import numbers
from typing import List, Optional

import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog, build_detection_test_loader
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.structures import BoxMode

from .stream import ResumableTrainLoader

logger = logging.getLogger(__name__)


def _with_context(e: Exception, message: str) -> Exception:
    """``e``'s own type (callers may catch it) with ``message``; types whose constructor
    needs more than a message (json.JSONDecodeError, UnicodeDecodeError) fall back to
    their nearest base class that takes one."""
    for cls in type(e).__mro__:
        try:
            return cls(message)
        except Exception:
            continue
    return RuntimeError(message)


class CheckedDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper, with errors that name the image that caused them."""

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except Exception as e:
            raise _with_context(
                e,
                f"{e}\n(while loading image {dataset_dict.get('file_name')!r}: check that the file "
                "exists, is a readable image and that its annotations are valid)",
            ) from e


def strip_annotations(dataset_dicts: List[dict]) -> List[dict]:
    """Copies of ``dataset_dicts`` without any label field."""
    label_keys = ("annotations", "sem_seg_file_name", "pan_seg_file_name", "segments_info")
    return [{k: v for k, v in d.items() if k not in label_keys} for d in dataset_dicts]


def _box_problem(ann: dict, height, width) -> Optional[str]:
    """What detectron2's mapper will do to a box it cannot use as given, or None."""
    mode, b = ann.get("bbox_mode"), ann.get("bbox")
    if mode not in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS) or b is None or len(b) != 4:
        return None
    x0, y0, x1, y1 = b if mode == BoxMode.XYXY_ABS else (b[0], b[1], b[0] + b[2], b[1] + b[3])
    if x1 < x0 or y1 < y0:
        return "inverted (x1 < x0 or y1 < y0): re-ordered into the box its corners span"
    if x1 == x0 or y1 == y0:
        return "of zero area: dropped"
    if height and width and (x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height):
        return "entirely outside the image: dropped"
    return None


def check_annotations(dicts: List[dict], name: str, num_classes: int, role: str):
    """One pass over the annotations (cheap). A category_id outside [0, num_classes) is an
    error: the loss would fail much later on an index assertion (a CUDA device-side
    assert on GPU) that names neither the dataset nor the id. Boxes detectron2 silently
    drops or re-orders are counted and logged; boxes partly outside the image are
    clipped to it without a word, as usual."""
    bad_ids, boxes = {}, {}
    for d in dicts:
        for a in d.get("annotations") or ():
            c = a.get("category_id")
            if not (isinstance(c, numbers.Integral) and 0 <= c < num_classes):
                bad_ids.setdefault(c if isinstance(c, numbers.Integral) else repr(c), d.get("file_name"))
            problem = _box_problem(a, d.get("height"), d.get("width"))
            if problem is not None:
                boxes.setdefault(problem, [0, d.get("file_name")])[0] += 1
    if bad_ids:
        ids = sorted(bad_ids, key=str)
        raise ValueError(
            f"{role}: dataset {name!r} has annotations with category_id {ids[:10]} (e.g. in "
            f"{bad_ids[ids[0]]!r}), outside 0..{num_classes - 1}: MODEL.ROI_HEADS.NUM_CLASSES={num_classes}. "
            "Dataset dicts need contiguous ids 0..NUM_CLASSES-1 (a COCO json's ids are mapped through "
            "thing_dataset_id_to_contiguous_id); fix the dataset's class mapping or MODEL.ROI_HEADS.NUM_CLASSES."
        )
    for problem, (count, example) in boxes.items():
        logger.warning(f"{role}: dataset {name!r} has {count} box(es) {problem} (e.g. in {example!r}).")


def dataset_dicts_or_error(names, filter_empty: bool, role: str, num_classes: Optional[int] = None) -> List[dict]:
    """Load and concatenate datasets, with errors that say which config key to fix.
    With ``num_classes`` (labelled data), annotations are checked: see check_annotations."""
    if not names:
        raise ValueError(f"{role} is empty: name at least one registered dataset.")
    registered = set(DatasetCatalog.list())
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise KeyError(
            f"{role}: dataset(s) {unknown} are not registered. Registered datasets include: "
            f"{sorted(n for n in registered if not n.startswith(('coco_', 'lvis_', 'keypoints_')))}"
        )
    dicts = []
    for name in names:
        try:
            d = DatasetCatalog.get(name)
        except Exception as e:
            # e.g. detectron2's COCO loader on a file that is not json names no file
            source = MetadataCatalog.get(name).get("json_file", None)
            raise _with_context(
                e,
                f"{role}: cannot load dataset {name!r}" + (f" from {source!r}" if source else "")
                + f": {type(e).__name__}: {e}",
            ) from e
        if len(d) == 0:
            raise ValueError(f"{role}: dataset {name!r} has no images.")
        if num_classes is not None:
            check_annotations(d, name, num_classes, role)
        dicts.append(d)
    merged = [x for d in dicts for x in d]
    if filter_empty:
        merged = filter_images_with_only_crowd_annotations(merged)
    if len(merged) == 0:
        raise ValueError(f"{role}: datasets {list(names)} have no image with an annotation.")
    return merged


def _repeat_factors(cfg, dicts):
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        return None
    if name == "RepeatFactorTrainingSampler":
        return RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dicts, cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT
        )
    raise ValueError(
        f"DATALOADER.SAMPLER_TRAIN={name!r} is not supported by mic_det's resumable loader; "
        "use 'TrainingSampler' or 'RepeatFactorTrainingSampler'."
    )


def trains_on_gpu(cfg) -> bool:
    """MODEL.DEVICE asks for CUDA and this machine has it. Then training images go to
    page-locked memory, so their copy to the device is faster and asynchronous."""
    return str(cfg.MODEL.DEVICE).startswith("cuda") and torch.cuda.is_available()


def build_source_loader(cfg, seed: int):
    """Labelled source batches of SOLVER.IMS_PER_BATCH images (all processes together)."""
    dicts = dataset_dicts_or_error(
        cfg.DATASETS.TRAIN, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, "DATASETS.TRAIN", cfg.MODEL.ROI_HEADS.NUM_CLASSES
    )
    return ResumableTrainLoader(
        dicts,
        CheckedDatasetMapper(cfg, is_train=True),
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        seed=seed,
        repeat_factors=_repeat_factors(cfg, dicts),
        pin_memory=trains_on_gpu(cfg),
    )


def build_target_loader(cfg, seed: int):
    """Images of DATASETS.TRAIN_TARGET, labels removed, no filtering on labels."""
    dicts = strip_annotations(dataset_dicts_or_error(cfg.DATASETS.TRAIN_TARGET, False, "DATASETS.TRAIN_TARGET"))
    logger.info(f"Target stream: {len(dicts)} unlabelled images from {list(cfg.DATASETS.TRAIN_TARGET)}")
    return ResumableTrainLoader(
        dicts,
        CheckedDatasetMapper(cfg, is_train=True),
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH_TARGET,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        seed=seed + 1,
        pin_memory=trains_on_gpu(cfg),
    )


def build_test_loader(cfg, dataset_name: str):
    """detectron2's test loader on dicts checked as the training ones are (the dataset
    loads, has images, category ids within NUM_CLASSES), with image errors named."""
    if cfg.MODEL.LOAD_PROPOSALS:  # precomputed proposals: detectron2's own path
        return build_detection_test_loader(cfg, dataset_name)
    dicts = dataset_dicts_or_error([dataset_name], False, "DATASETS.TEST", cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    return build_detection_test_loader(
        dataset=dicts, mapper=CheckedDatasetMapper(cfg, is_train=False), num_workers=cfg.DATALOADER.NUM_WORKERS
    )
