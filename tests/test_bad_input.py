"""Bad input, one row per mistake a user makes: the outcome is an error that names the
culprit (file, dataset, config key or value) and says what to do, or a documented,
harmless behaviour (clipped boxes, zero MIC loss). Never an unrelated message from deep
in a stack, never a silent wrong run. docs_bad_input.md lists the same rows."""
import contextlib
import io
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils.env import seed_all_rng
from PIL import Image

from conftest import da_cfg, run_train_net, tiny_cfg
from mic_det.checkpoint import AtomicCheckpointer
from mic_det.config import check_output_dir, load_config
from mic_det.data.custom import CustomDatasetError, register_custom_datasets
from mic_det.data.loaders import CheckedDatasetMapper, build_test_loader
from mic_det.engine import DomainAdaptiveTrainer
from mic_det.engine.cli import evaluate_checkpoint

H, W = 96, 160  # no resize at the tiny config's 96 px input: boxes keep their pixels


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def make_trainer(cfg):
    seed_all_rng(0)
    torch.manual_seed(0)
    return DomainAdaptiveTrainer(cfg)


def write_png(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
    return str(path)


def image_dict(path, boxes=((20, 20, 60, 60),), category_id=0, image_id=1):
    anns = [{"bbox": list(b), "bbox_mode": BoxMode.XYXY_ABS, "category_id": category_id, "iscrowd": 0} for b in boxes]
    return {"file_name": str(path), "image_id": image_id, "height": H, "width": W, "annotations": anns}


@contextlib.contextmanager
def captured_log(name):
    """Records of logger ``name`` (detectron2's loggers may not propagate to the root)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    log = logging.getLogger(name)
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


# ---------------------------------------------------------------------------------------
# rows 1-3: image files that are missing, empty or corrupt -> error naming the file
# ---------------------------------------------------------------------------------------
def _truncated_png(path, tmp_path):
    data = (tmp_path / "good.png").read_bytes() if write_png(tmp_path / "good.png") else b""
    path.write_bytes(data[: len(data) // 2])  # a valid header, half the pixel data


BAD_IMAGES = {
    "missing": lambda p, tmp: None,  # listed in the dataset, never written
    "empty": lambda p, tmp: p.write_bytes(b""),
    "truncated_png": _truncated_png,
    "garbage_bytes": lambda p, tmp: p.write_bytes(np.random.default_rng(0).bytes(600)),
}


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_bad_image_file_is_named_by_the_train_loader(kind, synthetic, register, tmp_path):
    bad = tmp_path / f"{kind}.png"
    BAD_IMAGES[kind](bad, tmp_path)
    name = register(f"bad_image_{kind}", [image_dict(bad)])
    cfg = da_cfg(tmp_path / "out", train=(name,))
    with pytest.raises(Exception) as e:
        next(iter(DomainAdaptiveTrainer.build_train_loader(cfg)))
    assert str(bad) in str(e.value) and "check that the file exists" in str(e.value)


def test_missing_target_image_is_named_by_a_training_step(synthetic, register, tmp_path):
    """Through the real loop (MIC + SADA, the image in the unlabelled target stream)."""
    missing = tmp_path / "gone.png"
    name = register("target_with_missing_image", [image_dict(missing)])
    trainer = make_trainer(da_cfg(tmp_path / "out", sada=True, mic=True, max_iter=1, target=(name,)))
    trainer.resume_or_load(resume=False)
    with pytest.raises(FileNotFoundError, match=r"gone\.png.*check that the file exists"):
        trainer.train()


def test_missing_image_is_named_from_a_loader_worker(synthetic, register, tmp_path):
    """DATALOADER.NUM_WORKERS > 0: the worker's error reaches the main process, named."""
    missing = tmp_path / "gone_in_worker.png"
    name = register("worker_missing_image", [image_dict(missing)])
    cfg = da_cfg(tmp_path / "out", train=(name,))
    cfg.DATALOADER.NUM_WORKERS = 1
    with pytest.raises(Exception, match="gone_in_worker.png"):
        next(iter(DomainAdaptiveTrainer.build_train_loader(cfg)))


# ---------------------------------------------------------------------------------------
# row 4: annotation files that are not json
# ---------------------------------------------------------------------------------------
NOT_COCO = {"not_json": "images: [oops", "json_list": "[1, 2, 3]"}


@pytest.mark.parametrize("kind", sorted(NOT_COCO))
def test_custom_coco_json_that_is_not_coco_names_file_and_key(kind, tmp_path):
    """DATASETS.CUSTOM: checked when the config is loaded (class names are read then)."""
    ann = tmp_path / "_annotations.coco.json"
    ann.write_text(NOT_COCO[kind])
    config = tmp_path / "custom.yaml"
    config.write_text(f'DATASETS:\n  CUSTOM:\n    my_test:\n      FORMAT: "coco"\n      JSON_FILE: "{ann}"\n')
    try:
        with pytest.raises(CustomDatasetError) as e:
            load_config(str(config), [])
    finally:
        register_custom_datasets(tiny_cfg())  # drops what a call registered
    assert "DATASETS.CUSTOM.my_test.JSON_FILE" in str(e.value) and str(ann) in str(e.value)


@pytest.mark.parametrize("content", ["images: [oops", "[1, 2, 3]", None], ids=["not_json", "json_list", "missing"])
def test_register_coco_instances_bad_json_names_dataset_and_file(content, synthetic, tmp_path):
    """detectron2's own COCO loader names neither (e.g. 'Expecting value: line 1 column 1');
    the training loader adds both."""
    ann = tmp_path / "instances.json"
    if content is not None:
        ann.write_text(content)
    register_coco_instances("d2_coco_bad_json", {}, str(ann), str(tmp_path))
    try:
        cfg = da_cfg(tmp_path / "out", train=("d2_coco_bad_json",))
        with pytest.raises(Exception) as e:
            DomainAdaptiveTrainer.build_train_loader(cfg)
    finally:
        DatasetCatalog.remove("d2_coco_bad_json")
        MetadataCatalog.remove("d2_coco_bad_json")
    msg = str(e.value)
    assert "DATASETS.TRAIN" in msg and "'d2_coco_bad_json'" in msg and str(ann) in msg
    if content == "images: [oops":
        assert isinstance(e.value, ValueError)  # json.JSONDecodeError -> its ValueError base


# ---------------------------------------------------------------------------------------
# row 5: boxes outside the image or of zero area -> clipped / dropped (detectron2)
# ---------------------------------------------------------------------------------------
def test_boxes_outside_the_image_are_clipped_or_dropped(synthetic, register, tmp_path):
    """detectron2's mapper clips boxes to the image and drops empty ones; the training
    loader logs how many boxes of each dataset are dropped or re-ordered."""
    path = write_png(tmp_path / "img.png")
    boxes = [
        (20, 20, 60, 60),  # inside: kept as is
        (140, 10, 200, 40),  # partly right of the image: clipped to x1 = W
        (-30, 50, 10, 90),  # partly left: clipped to x0 = 0
        (70, 60, 50, 40),  # inverted (x1 < x0): re-ordered into the box its corners span
        (200, 10, 250, 40),  # entirely right: nothing left after clipping -> dropped
        (-50, -40, -10, -5),  # entirely above-left -> dropped
        (30, 30, 30, 70),  # zero width -> dropped
    ]
    mapper = CheckedDatasetMapper(da_cfg(tmp_path), is_train=True)
    inst = mapper(image_dict(path, boxes))["instances"]
    assert inst.gt_boxes.tensor.tolist() == [[20, 20, 60, 60], [140, 10, W, 40], [0, 50, 10, 90], [50, 40, 70, 60]]

    # an image whose boxes all fall outside trains as background: finite losses
    outside_only = image_dict(path, boxes[4:], image_id=2)
    name = register("boxes_outside", [image_dict(path, boxes), outside_only])
    trainer = make_trainer(da_cfg(tmp_path / "out", train=(name,)))
    with captured_log("mic_det.data.loaders") as log:
        DomainAdaptiveTrainer.build_train_loader(trainer.cfg)
    for line in ("has 4 box(es) entirely outside the image: dropped", "has 2 box(es) of zero area: dropped",
                 "has 1 box(es) inverted"):
        assert f"DATASETS.TRAIN: dataset 'boxes_outside' {line}" in log.getvalue(), log.getvalue()
    trainer.resume_or_load(resume=False)
    trainer.train()
    total = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(total) == 2 and all(np.isfinite(total))


# ---------------------------------------------------------------------------------------
# row 6: category ids outside 0..NUM_CLASSES-1 -> error naming dataset, id, NUM_CLASSES
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("category_id", [3, 7, -1])
def test_category_id_out_of_range_is_named_before_training(category_id, synthetic, register, tmp_path):
    path = write_png(tmp_path / "img.png")
    name = register("bad_class_ids", [image_dict(path), image_dict(path, category_id=category_id, image_id=2)])
    cfg = da_cfg(tmp_path / "out", train=(name,))  # NUM_CLASSES 3
    with pytest.raises(ValueError) as e:
        DomainAdaptiveTrainer.build_train_loader(cfg)
    msg = str(e.value)
    assert "DATASETS.TRAIN" in msg and "'bad_class_ids'" in msg and f"[{category_id}]" in msg
    assert "NUM_CLASSES=3" in msg and "0..2" in msg
    # the same check on the evaluation side (mic_det.data.loaders.build_test_loader)
    with pytest.raises(ValueError, match=r"DATASETS.TEST.*'bad_class_ids'.*NUM_CLASSES=3"):
        build_test_loader(cfg, name)


def test_target_category_ids_are_never_checked(synthetic, register, tmp_path):
    """Target labels are removed unread: a wrong id there is no error."""
    path = write_png(tmp_path / "img.png")
    name = register("target_bad_ids", [image_dict(path, category_id=99)])
    cfg = da_cfg(tmp_path / "out", sada=True, target=(name,))
    source, target = next(iter(DomainAdaptiveTrainer.build_train_loader(cfg)))
    assert all("instances" not in x for x in target)


# ---------------------------------------------------------------------------------------
# row 7: registered datasets with zero images -> error naming them
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["DATASETS.TRAIN", "DATASETS.TRAIN_TARGET"])
def test_empty_dataset_is_named(role, synthetic, register, tmp_path):
    name = register("no_images_at_all", [])
    if role == "DATASETS.TRAIN":
        cfg = da_cfg(tmp_path, train=(name,))
    else:
        cfg = da_cfg(tmp_path, mic=True, target=(name,))
    with pytest.raises(ValueError, match=rf"{role}: dataset 'no_images_at_all' has no images"):
        DomainAdaptiveTrainer.build_train_loader(cfg)


# ---------------------------------------------------------------------------------------
# row 8: config mistakes -> errors naming key and value
# ---------------------------------------------------------------------------------------
CONFIG_ROWS = [
    # (overrides, fails in, words the message must hold)
    (["MIC.MASK_RATO", "0.5"], "load_config", ["MIC.MASK_RATO"]),
    (["SOLVER.MAX_ITER", "abc"], "load_config", ["SOLVER.MAX_ITER", "abc"]),
    (["SOLVER.BASE_LR", "fast"], "load_config", ["SOLVER.BASE_LR", "fast"]),
    (["MIC.QUALITY_WEIGHT", "wrong"], "trainer", ["MIC.QUALITY_WEIGHT", "'wrong'", "teacher"]),
    (["MIC.MASK_RATIO", "1.5"], "trainer", ["MIC.MASK_RATIO", "1.5"]),
    (["MIC.ENABLED", "False", "TEST.EVAL_MODEL", "teacher"], "trainer", ["TEST.EVAL_MODEL", "'teacher'", "MIC.ENABLED"]),
    (["TEST.EVAL_MODEL", "tacher"], "trainer", ["TEST.EVAL_MODEL", "'tacher'"]),
    (["MIC.PSEUDO_LABEL_MAX_AREA", "0.0"], "trainer", ["MIC.PSEUDO_LABEL_MAX_AREA", "(0, 1]", "0.0"]),
    (["MIC.PSEUDO_LABEL_MAX_AREA", "1.5"], "trainer", ["MIC.PSEUDO_LABEL_MAX_AREA", "1.5"]),
]


@pytest.mark.parametrize("opts, where, words", CONFIG_ROWS, ids=["=".join(r[0]) for r in CONFIG_ROWS])
def test_config_mistake_names_key_and_value(opts, where, words, tiny_mic_config, tmp_path):
    """Command-line overrides as tools/train_net.py takes them. Key and type mistakes
    exit in load_config (message only, no traceback); value mistakes raise ValueError
    when the trainer is built, before any data is read."""
    opts = opts + ["OUTPUT_DIR", str(tmp_path)]
    if where == "load_config":
        with pytest.raises(SystemExit) as e:
            load_config(tiny_mic_config, opts)
        msg = str(e.value.code)
    else:
        cfg = load_config(tiny_mic_config, opts)
        with pytest.raises(ValueError) as e:
            DomainAdaptiveTrainer(cfg)
        msg = str(e.value)
    for w in words:
        assert w in msg, (w, msg)


def test_unknown_key_in_yaml_names_file_and_key(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("SOLVER:\n  MAX_ITERS: 10\n")
    with pytest.raises(SystemExit) as e:
        load_config(str(bad), [])
    assert "SOLVER.MAX_ITERS" in str(e.value.code) and "typo.yaml" in str(e.value.code)


# ---------------------------------------------------------------------------------------
# rows 9-10: MODEL.WEIGHTS missing, unreadable, or of another network
# ---------------------------------------------------------------------------------------
def _tiny_model(seed=1, **overrides):
    cfg = tiny_cfg()
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    torch.manual_seed(seed)
    return build_model(cfg)


def _backbone_pkl(model, path):
    """Backbone-only weights as detectron2's ImageNet .pkl files hold them (torchvision
    layout, as tools/convert-torchvision-to-d2.py writes: no 'backbone.bottom_up.'
    prefix, matched by name heuristics, plus a classifier the detector lacks)."""
    prefix = "backbone.bottom_up."
    state = {k[len(prefix):]: v.numpy() for k, v in model.state_dict().items() if k.startswith(prefix)}
    state["fc.weight"] = np.zeros((10, 8), dtype=np.float32)
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "torchvision", "matching_heuristics": True}, f)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """One weights file per case; the model they are loaded into is tiny_cfg()'s."""
    d = tmp_path_factory.mktemp("weights")
    same = _tiny_model()
    r50 = _tiny_model(**{"MODEL.RESNETS.DEPTH": 50, "MODEL.RESNETS.RES2_OUT_CHANNELS": 256})
    files = {
        "same_architecture": d / "same.pth",
        "other_class_count": d / "classes5.pth",
        "imagenet_backbone_pkl": d / "R-18-backbone.pkl",
        "other_anchor_count": d / "anchors1.pth",
        "other_depth": d / "r50.pth",
        "other_fpn_width": d / "fpn64.pth",
        "other_depth_backbone_pkl": d / "R-50-backbone.pkl",
        "random_state_dict": d / "random.pth",
        "not_a_checkpoint": d / "garbage.pth",
    }
    torch.save({"model": same.state_dict()}, files["same_architecture"])
    torch.save({"model": _tiny_model(**{"MODEL.ROI_HEADS.NUM_CLASSES": 5}).state_dict()}, files["other_class_count"])
    _backbone_pkl(same, files["imagenet_backbone_pkl"])
    torch.save({"model": _tiny_model(**{"MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[1.0]]}).state_dict()}, files["other_anchor_count"])
    torch.save({"model": r50.state_dict()}, files["other_depth"])
    torch.save({"model": _tiny_model(**{"MODEL.FPN.OUT_CHANNELS": 64}).state_dict()}, files["other_fpn_width"])
    _backbone_pkl(r50, files["other_depth_backbone_pkl"])
    torch.save({"model": {"conv.weight": torch.randn(8, 3, 3, 3), "fc.bias": torch.randn(4)}}, files["random_state_dict"])
    files["not_a_checkpoint"].write_bytes(b"this is not a checkpoint\n")
    return {k: str(v) for k, v in files.items()}


WEIGHTS_ROWS = [
    # (case, error message fragment; None: loads, with detectron2's warnings)
    ("same_architecture", None),
    ("other_class_count", None),  # box predictor re-initialised: fine-tuning to new classes
    ("imagenet_backbone_pkl", None),  # FPN, RPN, ROI heads missing: the usual ImageNet start
    ("other_anchor_count", None),  # RPN's two output layers re-initialised
    ("other_depth", "have another shape"),
    ("other_fpn_width", "have another shape"),
    ("other_depth_backbone_pkl", "have another shape"),
    ("random_state_dict", "only 0 of the model's"),
    ("not_a_checkpoint", "cannot read checkpoint"),
]


@pytest.mark.parametrize("case, error", WEIGHTS_ROWS, ids=[r[0] for r in WEIGHTS_ROWS])
def test_weights_that_do_not_fit_are_an_error(case, error, weights):
    model = _tiny_model(seed=2)  # initialised unlike the files (seed 1)
    checkpointer = AtomicCheckpointer(model, "")
    path = weights[case]
    if error is None:
        checkpointer.load(path, checkpointables=[])
        checkpointer.check_last_load()
        loaded = model.state_dict()["backbone.bottom_up.stem.conv1.weight"]
        assert torch.equal(loaded, _tiny_model(seed=1).state_dict()["backbone.bottom_up.stem.conv1.weight"])
        return
    with pytest.raises(ValueError) as e:
        checkpointer.load(path, checkpointables=[])
        checkpointer.check_last_load()
    assert path in str(e.value) and error in str(e.value)
    if case != "not_a_checkpoint":
        assert "MODEL.WEIGHTS" in str(e.value)


def test_trainer_refuses_weights_of_another_depth(synthetic, weights, tmp_path):
    cfg = da_cfg(tmp_path, sada=True)
    cfg.MODEL.WEIGHTS = weights["other_depth"]
    trainer = make_trainer(cfg)
    with pytest.raises(ValueError, match=r"r50\.pth.*another shape.*another architecture"):
        trainer.resume_or_load(resume=False)


def test_trainer_accepts_another_class_count_with_a_warning(synthetic, weights, tmp_path):
    cfg = da_cfg(tmp_path, sada=True, mic=True)
    cfg.MODEL.WEIGHTS = weights["other_class_count"]
    trainer = make_trainer(cfg)
    with captured_log("fvcore.common.checkpoint") as log:
        trainer.resume_or_load(resume=False)
    assert "roi_heads.box_predictor.cls_score.weight" in log.getvalue() and "incompatible shapes" in log.getvalue()
    saved = torch.load(weights["other_class_count"], map_location="cpu")["model"]
    assert torch.equal(trainer.student.state_dict()["roi_heads.box_head.fc1.weight"], saved["roi_heads.box_head.fc1.weight"])
    # the teacher starts as a copy of the loaded student
    assert torch.equal(trainer.teacher.model.state_dict()["roi_heads.box_head.fc1.weight"], saved["roi_heads.box_head.fc1.weight"])


def test_missing_weights_file_is_named(synthetic, tmp_path):
    cfg = da_cfg(tmp_path / "out")
    cfg.MODEL.WEIGHTS = str(tmp_path / "no_such_model.pth")
    trainer = make_trainer(cfg)
    with pytest.raises(FileNotFoundError, match=r"MODEL.WEIGHTS: weights file '.*no_such_model\.pth' does not exist"):
        trainer.resume_or_load(resume=False)
    # with --resume and a checkpoint in OUTPUT_DIR, MODEL.WEIGHTS is not used (detectron2's rule)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    trainer.checkpointer.save("model_0000000", iteration=0)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 1


@pytest.mark.parametrize("case, error", [
    ("missing", "does not exist"),
    ("other_class_count", "roi_heads.box_predictor"),  # evaluation: every layer must load
    ("other_depth", "another shape"),
])
def test_eval_only_refuses_weights_that_do_not_fit(case, error, weights, tmp_path):
    cfg = tiny_cfg()
    cfg.TEST.EVAL_MODEL = "student"
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.MODEL.WEIGHTS = weights.get(case, str(tmp_path / "missing.pth"))
    with pytest.raises(SystemExit) as e:
        evaluate_checkpoint(cfg)
    assert cfg.MODEL.WEIGHTS in str(e.value.code) and error in str(e.value.code)


# ---------------------------------------------------------------------------------------
# row 11: OUTPUT_DIR that cannot be created or written
# ---------------------------------------------------------------------------------------
def test_unwritable_output_dir_is_named_by_train_net(tiny_mic_config, tmp_path):
    """Simulated with a path under a regular file (works as root, unlike chmod). It fails
    before any dataset is read, so no datasets root is needed."""
    afile = tmp_path / "afile"
    afile.write_text("")
    out = afile / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    p = run_train_net(["--config", tiny_mic_config, "OUTPUT_DIR", str(out)], env)
    assert p.returncode != 0
    assert f"OUTPUT_DIR {str(out)!r}" in p.stderr and "not a writable folder" in p.stderr
    assert "Traceback" not in p.stderr


def test_output_dir_that_is_a_file_is_named(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(SystemExit, match=r"OUTPUT_DIR .*afile"):
        check_output_dir(str(afile))
    check_output_dir(str(tmp_path / "new" / "dir"))  # created
    assert (tmp_path / "new" / "dir").is_dir()


# ---------------------------------------------------------------------------------------
# row 12: a non-finite loss -> error naming loss and iteration; last checkpoint intact
# ---------------------------------------------------------------------------------------
def test_nan_loss_leaves_the_last_checkpoint_intact(synthetic, tmp_path):
    cfg = da_cfg(tmp_path, max_iter=4)
    cfg.SOLVER.CHECKPOINT_PERIOD = 1
    trainer = make_trainer(cfg)
    trainer.resume_or_load(resume=False)
    forward = trainer.model.forward

    def poisoned(*args, **kwargs):
        out = forward(*args, **kwargs)
        if trainer.iter == 2:
            out["loss_cls"] = out["loss_cls"] * float("nan")
        return out

    trainer.model.forward = poisoned
    with pytest.raises(FloatingPointError, match=r"iteration 2.*loss_cls.*last checkpoint"):
        trainer.train()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists() and not (tmp_path / "model_final.pth").exists()
    ckpt = torch.load(tmp_path / "model_0000001.pth", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    # --resume continues from it, at the iteration that failed
    trainer.model.forward = forward
    again = make_trainer(cfg)
    again.resume_or_load(resume=True)
    assert again.start_iter == 2


# ---------------------------------------------------------------------------------------
# row 13: no pseudo-label survives -> zero MIC loss, training goes on
# ---------------------------------------------------------------------------------------
def test_no_surviving_pseudo_label_gives_zero_mic_loss(synthetic, tmp_path):
    cfg = da_cfg(tmp_path, sada=True, mic=True, max_iter=2)
    cfg.MIC.PSEUDO_LABEL_THRESHOLD = 1.01  # no score reaches it
    trainer = make_trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    h = trainer.storage.history
    for key in ("loss_mic_rpn_cls", "loss_mic_cls", "mic/images_used_fraction", "mic/pseudo_boxes_per_image"):
        values = [v for v, _ in h(key).values()]
        assert values == [0.0, 0.0], (key, values)
    assert all(np.isfinite([v for v, _ in h("total_loss").values()]))
    assert (tmp_path / "model_final.pth").exists()
