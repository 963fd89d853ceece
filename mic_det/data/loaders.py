"""Training data: a labelled source stream and an unlabelled target stream, paired per
step. Target annotations are removed before the loader is built, so nothing that
consumes the target stream (sampler, mapper, model) can ever see them."""
import logging
from typing import List

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.data.samplers import RepeatFactorTrainingSampler

from .stream import ResumableTrainLoader

logger = logging.getLogger(__name__)


class CheckedDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper, with errors that name the image that caused them."""

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except Exception as e:
            raise type(e)(
                f"{e}\n(while loading image {dataset_dict.get('file_name')!r}: check that the file "
                "exists, is a readable image and that its annotations are valid)"
            ) from e


def strip_annotations(dataset_dicts: List[dict]) -> List[dict]:
    """Copies of ``dataset_dicts`` without any label field."""
    label_keys = ("annotations", "sem_seg_file_name", "pan_seg_file_name", "segments_info")
    return [{k: v for k, v in d.items() if k not in label_keys} for d in dataset_dicts]


def dataset_dicts_or_error(names, filter_empty: bool, role: str) -> List[dict]:
    """Load and concatenate datasets, with errors that say which config key to fix."""
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
        d = DatasetCatalog.get(name)
        if len(d) == 0:
            raise ValueError(f"{role}: dataset {name!r} has no images.")
        dicts.append(d)
    merged = [x for d in dicts for x in d]
    if filter_empty:
        merged = filter_images_with_only_crowd_annotations(merged)
    if len(merged) == 0:
        raise ValueError(f"{role}: datasets {list(names)} have no image with an annotation.")
    return merged


def check_class_lists(cfg):
    """Source, target and test datasets must name the same classes in the same order."""
    reference_name = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None
    if reference_name is None:
        return
    reference = list(MetadataCatalog.get(reference_name).get("thing_classes", []))
    for role, names in (("DATASETS.TRAIN", cfg.DATASETS.TRAIN), ("DATASETS.TRAIN_TARGET", cfg.DATASETS.TRAIN_TARGET), ("DATASETS.TEST", cfg.DATASETS.TEST)):
        for name in names:
            classes = MetadataCatalog.get(name).get("thing_classes", None)
            if classes is not None and list(classes) != reference:
                raise ValueError(
                    f"Class lists differ: {reference_name!r} (DATASETS.TRAIN) has {reference}, "
                    f"{name!r} ({role}) has {list(classes)}. Every dataset must use the same "
                    "classes in the same order."
                )
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != len(reference) and reference:
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES} but "
            f"{reference_name!r} has {len(reference)} classes {reference}."
        )


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


def build_source_loader(cfg, seed: int):
    """Labelled source batches of SOLVER.IMS_PER_BATCH images (all processes together)."""
    dicts = dataset_dicts_or_error(cfg.DATASETS.TRAIN, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, "DATASETS.TRAIN")
    return ResumableTrainLoader(
        dicts,
        CheckedDatasetMapper(cfg, is_train=True),
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        seed=seed,
        repeat_factors=_repeat_factors(cfg, dicts),
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
    )


class PairedDataLoader:
    """Yields ``(source_batch, target_batch)`` from two infinite loaders, one pair a step."""

    def __init__(self, source, target):
        self.source = source
        self.target = target

    def set_start(self, batch: int):
        self.source.set_start(batch)
        self.target.set_start(batch)

    def __iter__(self):
        yield from zip(self.source, self.target)
