"""The trainer end to end on a tiny synthetic shift: paired loading, target labels never
used, every loss logged, non-finite losses named, results.json, bad input."""
import json

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.env import seed_all_rng

from conftest import da_cfg as shared_da_cfg
from conftest import tiny_cfg
from mic_det.config import check_class_lists
from mic_det.data.loaders import CheckedDatasetMapper, strip_annotations
from mic_det.data.stream import PairedDataLoader
from mic_det.data.synthetic import register_synthetic_shift
from mic_det.engine import DomainAdaptiveTrainer, check_losses_finite


def da_cfg(out, sada=True, mic=True, max_iter=2):
    cfg = shared_da_cfg(out, sada, mic, max_iter)
    cfg.INPUT.RANDOM_FLIP = "horizontal"  # this module's runs keep detectron2's default
    return cfg


def train(cfg):
    seed_all_rng(0)
    torch.manual_seed(0)
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def test_paired_loader_pairs_source_with_unlabelled_target(synthetic, tmp_path):
    cfg = da_cfg(tmp_path)
    loader = DomainAdaptiveTrainer.build_train_loader(cfg)
    assert isinstance(loader, PairedDataLoader)
    source, target = next(iter(loader))
    assert len(source) == cfg.SOLVER.IMS_PER_BATCH and len(target) == cfg.SOLVER.IMS_PER_BATCH_TARGET
    assert all("instances" in x for x in source)
    assert all("instances" not in x and "annotations" not in x for x in target)
    assert all("foggy" in x["file_name"] for x in target) and all("clear" in x["file_name"] for x in source)


def test_loaders_pin_memory_only_for_a_gpu_model(synthetic, tmp_path, monkeypatch):
    cfg = da_cfg(tmp_path)
    loader = DomainAdaptiveTrainer.build_train_loader(cfg)
    assert not loader.source.pin_memory and not loader.target.pin_memory  # MODEL.DEVICE cpu
    cfg.MODEL.DEVICE = "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not DomainAdaptiveTrainer.build_train_loader(cfg).source.pin_memory  # asked for, not there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loader = DomainAdaptiveTrainer.build_train_loader(cfg)
    assert loader.source.pin_memory and loader.target.pin_memory


def test_target_annotations_never_reach_a_loss(synthetic, tmp_path):
    cfg = da_cfg(tmp_path / "a")
    clean = train(cfg).storage.history

    original = DatasetCatalog.get("synthetic_foggy_train")
    corrupted = []
    for d in original:
        d = dict(d)
        # wrong classes, wrong boxes, and an image with no label at all
        d["annotations"] = [dict(a, category_id=(a["category_id"] + 1) % 3, bbox=[0, 0, 5, 5]) for a in d["annotations"]]
        corrupted.append(d)
    corrupted[0]["annotations"] = []
    DatasetCatalog.remove("synthetic_foggy_train")
    DatasetCatalog.register("synthetic_foggy_train", lambda: corrupted)
    try:
        cfg.OUTPUT_DIR = str(tmp_path / "b")
        corrupt = train(cfg).storage.history
    finally:
        DatasetCatalog.remove("synthetic_foggy_train")  # the corrupted stand-in goes before ours comes back
        register_synthetic_shift(synthetic, image_size=(96, 160), num_train=8, num_val=4)
    for key in ("total_loss", "loss_mic_cls", "loss_mic_rpn_cls", "loss_sada_img", "loss_cls"):
        assert clean(key).values() == corrupt(key).values(), key


def test_every_loss_term_is_logged(synthetic, tmp_path):
    trainer = train(da_cfg(tmp_path, max_iter=1))
    logged = set(trainer.storage.histories())
    for name in (
        "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg",
        "loss_sada_img", "loss_sada_ins", "loss_sada_cst",
        "loss_mic_rpn_cls", "loss_mic_cls",
        "mic/pseudo_boxes_per_image", "mic/images_used_fraction", "mic/pseudo_box_confidence",
    ):
        assert name in logged, name
    lines = [json.loads(x) for x in open(tmp_path / "metrics.json")]
    assert "loss_mic_cls" in lines[-1]
    assert (tmp_path / "model_final.pth").exists()
    ckpt = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert {"model", "teacher", "trainer", "iteration"} <= set(ckpt)
    # detectron2 keeps optimizer and LR scheduler inside the trainer's state
    assert "optimizer" in ckpt["trainer"]["_trainer"]
    assert "last_epoch" in ckpt["trainer"]["hooks"]["LRScheduler"]


def test_non_finite_loss_names_term_and_iteration():
    losses = {"loss_cls": torch.tensor(0.5), "loss_mic_cls": torch.tensor(float("nan"))}
    with pytest.raises(FloatingPointError) as e:
        check_losses_finite(losses, sum(losses.values()), 17)
    assert "loss_mic_cls" in str(e.value) and "17" in str(e.value) and "loss_cls" not in str(e.value)
    check_losses_finite({"a": torch.tensor(1.0)}, torch.tensor(1.0), 0)  # finite: no error


def test_class_lists_must_match(synthetic, register, tmp_path):
    cfg = da_cfg(tmp_path)
    register("other_classes_train", [], classes=["car", "bus", "person"])
    cfg.DATASETS.TRAIN_TARGET = ("other_classes_train",)
    with pytest.raises(ValueError) as e:
        check_class_lists(cfg)
    msg = str(e.value)
    assert "other_classes_train" in msg and "synthetic_clear_train" in msg and "['car', 'bus', 'person']" in msg


def test_unregistered_and_empty_datasets_are_named(synthetic, register, tmp_path):
    cfg = da_cfg(tmp_path)
    cfg.DATASETS.TRAIN_TARGET = ("no_such_dataset",)
    with pytest.raises(KeyError, match="no_such_dataset"):
        DomainAdaptiveTrainer.build_train_loader(cfg)
    register("empty_target", [])
    cfg.DATASETS.TRAIN_TARGET = ("empty_target",)
    with pytest.raises(ValueError, match="empty_target.*no images"):
        DomainAdaptiveTrainer.build_train_loader(cfg)


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    mapper = CheckedDatasetMapper(tiny_cfg(), is_train=True)
    with pytest.raises(Exception, match="broken.png"):
        mapper({"file_name": str(bad), "height": 10, "width": 10, "annotations": []})


def test_strip_annotations_copies():
    dicts = [{"file_name": "a.png", "annotations": [1], "image_id": 3}]
    out = strip_annotations(dicts)
    assert out == [{"file_name": "a.png", "image_id": 3}] and "annotations" in dicts[0]


def test_sada_needs_a_target_dataset(synthetic, tmp_path):
    cfg = da_cfg(tmp_path)
    cfg.DATASETS.TRAIN_TARGET = ()
    with pytest.raises(ValueError, match="TRAIN_TARGET"):
        DomainAdaptiveTrainer(cfg)


def test_mixed_precision_step_runs(synthetic, tmp_path):
    """SOLVER.AMP with bfloat16 (CPU autocast here): finite losses, weights updated."""
    cfg = da_cfg(tmp_path, max_iter=2)
    cfg.SOLVER.AMP.ENABLED = True
    trainer = train(cfg)
    assert trainer._trainer.amp_dtype == torch.bfloat16 and trainer._trainer.grad_scaler is None
    total = trainer.storage.history("total_loss").values()
    assert len(total) == 2 and all(torch.isfinite(torch.tensor(v)) for v, _ in total)


def test_auto_scale_workers_scales_the_target_batch_and_burn_in():
    cfg = tiny_cfg(sada=True, mic=True)
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 1
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.IMS_PER_BATCH_TARGET = 2, 2
    cfg.SOLVER.MAX_ITER, cfg.TEACHER.BURN_IN_ITERS = 1000, 400
    cfg.MRT.SELECTIVE_RETRAINING.PERIOD = 200
    out = DomainAdaptiveTrainer.auto_scale_workers(cfg, 4)
    assert (out.SOLVER.IMS_PER_BATCH, out.SOLVER.IMS_PER_BATCH_TARGET) == (8, 8)
    assert (out.SOLVER.MAX_ITER, out.TEACHER.BURN_IN_ITERS) == (250, 100)
    assert out.MRT.SELECTIVE_RETRAINING.PERIOD == 50  # the same number of resets
    assert cfg.SOLVER.IMS_PER_BATCH_TARGET == 2 and cfg.TEACHER.BURN_IN_ITERS == 400  # a new config
    assert DomainAdaptiveTrainer.auto_scale_workers(cfg, 1) is cfg
    cfg.SOLVER.REFERENCE_WORLD_SIZE, cfg.SOLVER.IMS_PER_BATCH_TARGET = 2, 3
    with pytest.raises(ValueError, match="IMS_PER_BATCH_TARGET.*3.*REFERENCE_WORLD_SIZE.*2"):
        DomainAdaptiveTrainer.auto_scale_workers(cfg, 4)
