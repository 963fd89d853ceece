"""Custom datasets declared in the config (mic_det/data/custom/): COCO json, Pascal VOC,
YOLO txt and plain image folders; class matching, renames and ignored classes; the
errors; the config keys; and the smoke/fire recipes on the CCTV set (datasets/cctv-fire-smoke)."""
import json
import math
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from conftest import CCTV, CCTV_SKIP_REASON, tiny_cfg
from mic_det import add_mic_config
from mic_det.data.custom import CustomDatasetError, CustomDatasetFileError, register_custom_datasets
from mic_det.config import check_class_lists

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRE_SMOKE = CCTV
RECIPES = os.path.join(REPO, "configs", "smoke_fire")


@pytest.fixture(autouse=True)
def _unregister():
    yield
    register_custom_datasets(cfg_with({}))  # drop this test's registrations


def write_image(path, h, w):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def cfg_with(custom, classes=(), class_map=(), ignore=(), train=()):
    cfg = add_mic_config(get_cfg())
    for name, node in custom.items():
        cfg.DATASETS.CUSTOM[name] = type(cfg)(node)
    cfg.DATASETS.CLASSES = tuple(classes)
    cfg.DATASETS.CLASS_MAP = tuple(class_map)
    cfg.DATASETS.IGNORE_CLASSES = tuple(ignore)
    cfg.DATASETS.TRAIN = tuple(train)
    cfg.DATASETS.TEST = ()
    return cfg


def boxes(d):
    return [(a["category_id"], [round(v, 6) for v in a["bbox"]]) for a in d["annotations"]]


# ---------------------------------------------------------------------------------------
# Tiny datasets in each format (64 wide, 32 high: normalised values stay exact)
# ---------------------------------------------------------------------------------------
def make_yolo(root, names=("Fire", "default", "smoke"), split="train"):
    write_image(root / split / "images" / "a.jpg", 32, 64)
    write_image(root / split / "images" / "b.png", 32, 64)  # only a "default" box
    write_image(root / split / "images" / "c.jpg", 32, 64)  # no label file
    write_image(root / split / "images" / "d.jpg", 32, 64)  # empty label file
    labels = root / split / "labels"
    labels.mkdir(parents=True)
    # a box and a polygon (boxed by its extent), no newline at the end (as Roboflow writes)
    (labels / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n2 0.125 0.25 0.375 0.25 0.25 0.75")
    (labels / "b.txt").write_text("1 0.5 0.5 1.0 1.0\n")
    (labels / "d.txt").write_text("")
    (root / "data.yaml").write_text("names:\n" + "".join(f"- {n}\n" for n in names) + f"nc: {len(names)}\n")
    return root


def make_coco(root, categories=((1, "Fire"), (2, "default"), (3, "Smoke"))):
    write_image(root / "imgs" / "x.jpg", 32, 64)
    write_image(root / "imgs" / "y.jpg", 40, 50)
    data = {
        "images": [
            {"id": 7, "file_name": "x.jpg", "height": 32, "width": 64},
            {"id": 9, "file_name": "y.jpg"},  # no size: read from the header
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [1.5, 2.0, 10.0, 20.0], "area": 200.0, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [30, 4, 8, 6], "area": 48.0, "iscrowd": 1},
            {"id": 3, "image_id": 9, "category_id": 2, "bbox": [0, 0, 50, 40], "area": 2000.0, "iscrowd": 0},
        ],
        "categories": [{"id": i, "name": n} for i, n in categories],
    }
    (root / "ann.json").write_text(json.dumps(data))
    return root


def voc_xml(filename, objects, size=(64, 32)):
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    sz = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>{filename}</filename>{sz}{objs}</annotation>"


def make_voc_layout(root):
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    write_image(root / "JPEGImages" / "0001.jpg", 32, 64)
    write_image(root / "JPEGImages" / "0002.jpg", 32, 64)
    write_image(root / "JPEGImages" / "0003.jpg", 32, 64)
    (root / "Annotations" / "0001.xml").write_text(voc_xml("0001.jpg", [("FIRE", (11, 6, 30, 20)), ("smoke", (1, 1, 64, 32))]))
    (root / "Annotations" / "0002.xml").write_text(voc_xml("0002.jpg", [("default", (1, 1, 64, 32))]))
    (root / "Annotations" / "0003.xml").write_text(voc_xml("0003.jpg", [("smoke", (5, 5, 9, 9))]))
    (root / "ImageSets" / "Main" / "train.txt").write_text("0001\n0002\n")
    return root


# ---------------------------------------------------------------------------------------
# Loaders: boxes exactly as written
# ---------------------------------------------------------------------------------------
def test_yolo_boxes_classes_and_background_images(tmp_path):
    root = make_yolo(tmp_path / "fire")
    cfg = cfg_with({"y": {"FORMAT": "yolo", "ROOT": str(root), "SPLIT": "train"}}, classes=["fire", "smoke"], ignore=["default"])
    assert register_custom_datasets(cfg) == ["y"]
    dicts = {os.path.basename(d["file_name"]): d for d in DatasetCatalog.get("y")}
    assert sorted(dicts) == ["a.jpg", "b.png", "c.jpg", "d.jpg"]  # no label / only ignored / empty: kept
    a = dicts["a.jpg"]
    assert (a["height"], a["width"]) == (32, 64) and a["file_name"] == str(root / "train" / "images" / "a.jpg")
    # "Fire" -> fire (0): cx 32, cy 16, w 16, h 16; polygon smoke (1) -> its extent
    assert boxes(a) == [(0, [24.0, 8.0, 40.0, 24.0]), (1, [8.0, 8.0, 24.0, 24.0])]
    assert all(x["bbox_mode"] == BoxMode.XYXY_ABS for x in a["annotations"])
    assert boxes(dicts["b.png"]) == [] and boxes(dicts["c.jpg"]) == [] and boxes(dicts["d.jpg"]) == []
    meta = MetadataCatalog.get("y")
    assert meta.thing_classes == ["fire", "smoke"] and meta.evaluator_type == "coco"
    assert not hasattr(meta, "json_file")  # the evaluator converts the mapped dicts itself


def test_yolo_ultralytics_layout_and_names_key(tmp_path):
    root = tmp_path / "u"
    write_image(root / "images" / "val" / "sub" / "a.jpg", 32, 64)
    (root / "labels" / "val" / "sub").mkdir(parents=True)
    (root / "labels" / "val" / "sub" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    cfg = cfg_with({"u": {"FORMAT": "yolo", "ROOT": str(root), "SPLIT": "val", "NAMES": ["smoke", "fire"]}}, classes=["fire", "smoke"])
    register_custom_datasets(cfg)
    (d,) = DatasetCatalog.get("u")
    assert boxes(d) == [(0, [16.0, 8.0, 48.0, 24.0])]  # index 1 = "fire" = class 0


def test_coco_boxes_remapped_and_ignored(tmp_path):
    root = make_coco(tmp_path / "c")
    cfg = cfg_with(
        {"c": {"FORMAT": "coco", "ROOT": str(root), "JSON_FILE": "ann.json", "IMAGE_ROOT": "imgs"}},
        classes=["smoke", "fire"], ignore=["DEFAULT"],
    )
    register_custom_datasets(cfg)
    x, y = DatasetCatalog.get("c")
    assert x["image_id"] == 7 and x["file_name"] == str(root / "imgs" / "x.jpg")
    # [x, y, w, h] -> [x, y, x + w, y + h]; Fire -> 1, Smoke -> 0; iscrowd kept
    assert boxes(x) == [(1, [1.5, 2.0, 11.5, 22.0]), (0, [30.0, 4.0, 38.0, 10.0])]
    assert [a["iscrowd"] for a in x["annotations"]] == [0, 1]
    assert (y["height"], y["width"]) == (40, 50) and boxes(y) == []  # size from the header; default dropped
    # remapped classes: the json cannot be the evaluation ground truth
    assert not hasattr(MetadataCatalog.get("c"), "json_file")


def test_coco_categories_without_boxes_need_no_mapping(tmp_path):
    root = make_coco(tmp_path / "c")
    data = json.loads((root / "ann.json").read_text())
    data["categories"].append({"id": 0, "name": "fire-smoke-supercategory"})  # as Roboflow exports
    (root / "ann.json").write_text(json.dumps(data))
    register_custom_datasets(cfg_with({"c": {"FORMAT": "coco", "ROOT": str(root), "JSON_FILE": "ann.json", "IMAGE_ROOT": "imgs"}}, classes=["fire", "smoke"], ignore=["default"]))
    assert [c for c, _ in boxes(DatasetCatalog.get("c")[0])] == [0, 1]
    assert MetadataCatalog.get("c").dataset_classes == ["Fire", "default", "Smoke"]


def test_coco_json_used_for_evaluation_only_when_ids_match(tmp_path):
    root = make_coco(tmp_path / "c", categories=((1, "fire"), (2, "default"), (3, "smoke")))
    node = {"FORMAT": "coco", "JSON_FILE": str(root / "ann.json"), "IMAGE_ROOT": str(root / "imgs")}
    register_custom_datasets(cfg_with({"c": node}, classes=["Fire", "Default", "Smoke"]))
    meta = MetadataCatalog.get("c")
    assert meta.json_file == str(root / "ann.json")
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    register_custom_datasets(cfg_with({"c": node}, classes=["fire", "smoke"], ignore=["default"]))
    assert not hasattr(MetadataCatalog.get("c"), "json_file")


def test_voc_imageset_layout_one_based(tmp_path):
    root = make_voc_layout(tmp_path / "voc")
    cfg = cfg_with({"v": {"FORMAT": "voc", "ROOT": str(root), "SPLIT": "train"}}, classes=["fire", "smoke"], ignore=["default"])
    register_custom_datasets(cfg)
    one, two = DatasetCatalog.get("v")  # 0003 is not in train.txt
    assert one["file_name"] == str(root / "JPEGImages" / "0001.jpg") and (one["height"], one["width"]) == (32, 64)
    # VOC devkit pixel indices: x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax
    assert boxes(one) == [(0, [10.0, 5.0, 30.0, 20.0]), (1, [0.0, 0.0, 64.0, 32.0])]
    assert boxes(two) == []  # only a "default" box: image kept as background


def test_voc_flat_folder_zero_based_and_unlabelled_image(tmp_path):
    root = tmp_path / "flat"
    write_image(root / "p.jpg", 32, 64)
    write_image(root / "q.jpg", 30, 20)  # no xml: background
    (root / "p.xml").write_text(voc_xml("p.jpg", [("Smoke", (3, 4, 13, 14))], size=None))
    cfg = cfg_with({"f": {"FORMAT": "voc", "ROOT": str(root), "ONE_BASED": False}}, classes=["fire", "smoke"])
    register_custom_datasets(cfg)
    p, q = DatasetCatalog.get("f")
    assert boxes(p) == [(1, [3.0, 4.0, 13.0, 14.0])] and (p["height"], p["width"]) == (32, 64)
    assert boxes(q) == [] and (q["height"], q["width"]) == (30, 20)


def test_images_folder_for_unlabelled_targets(tmp_path):
    write_image(tmp_path / "cams" / "n1.jpg", 32, 64)
    write_image(tmp_path / "cams" / "n2.png", 16, 16)
    (tmp_path / "cams" / "notes.txt").write_text("not an image")
    register_custom_datasets(cfg_with({"t": {"FORMAT": "images", "IMAGE_DIR": str(tmp_path / "cams")}}, classes=["fire", "smoke"]))
    dicts = DatasetCatalog.get("t")
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["n1.jpg", "n2.png"]
    assert all(d["annotations"] == [] for d in dicts) and MetadataCatalog.get("t").thing_classes == ["fire", "smoke"]


def evaluate_ground_truth(name, out):
    """The project's COCO evaluator on a dataset, fed its own boxes as predictions."""
    from detectron2.structures import Boxes, Instances

    from mic_det.evaluation import DomainAdaptationCOCOEvaluator

    evaluator = DomainAdaptationCOCOEvaluator(name, output_dir=str(out))
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        anns = [a for a in d["annotations"] if not a["iscrowd"]]
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()["bbox"]


def test_evaluation_of_mapped_and_identity_sets(tmp_path):
    make_yolo(tmp_path / "y")
    make_coco(tmp_path / "c", categories=((1, "fire"), (2, "default"), (3, "smoke")))
    register_custom_datasets(cfg_with({"y": {"FORMAT": "yolo", "ROOT": str(tmp_path / "y"), "SPLIT": "train"}}, classes=["fire", "smoke"], ignore=["default"]))
    res = evaluate_ground_truth("y", tmp_path / "eval_y")  # dicts converted to COCO by detectron2
    assert res["AP50-fire"] == pytest.approx(100) and res["AP50-smoke"] == pytest.approx(100)
    node = {"FORMAT": "coco", "JSON_FILE": str(tmp_path / "c" / "ann.json"), "IMAGE_ROOT": str(tmp_path / "c" / "imgs")}
    register_custom_datasets(cfg_with({"c": node}, classes=["fire", "default", "smoke"]))
    res = evaluate_ground_truth("c", tmp_path / "eval_c")  # the json itself is the ground truth
    assert res["AP50-fire"] == pytest.approx(100) and res["AP50-default"] == pytest.approx(100)


# ---------------------------------------------------------------------------------------
# Classes across datasets
# ---------------------------------------------------------------------------------------
def test_three_formats_share_one_class_list_after_mapping(tmp_path):
    make_yolo(tmp_path / "y")
    make_coco(tmp_path / "c", categories=((1, "flame"), (2, "default"), (3, "SMOKE")))
    make_voc_layout(tmp_path / "v")
    cfg = cfg_with(
        {
            "src": {"FORMAT": "yolo", "ROOT": str(tmp_path / "y"), "SPLIT": "train"},
            "tgt": {"FORMAT": "voc", "ROOT": str(tmp_path / "v"), "SPLIT": "train"},
            "tst": {"FORMAT": "coco", "JSON_FILE": str(tmp_path / "c" / "ann.json"), "IMAGE_ROOT": str(tmp_path / "c" / "imgs")},
        },
        class_map=["Flame:fire"], ignore=["default"], train=["src"],
    )
    cfg.DATASETS.TRAIN_TARGET = ("tgt",)
    cfg.DATASETS.TEST = ("tst",)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    register_custom_datasets(cfg)
    # DATASETS.CLASSES empty: the first training set's classes, "default" left out
    assert MetadataCatalog.get("src").thing_classes == ["Fire", "smoke"]
    check_class_lists(cfg)  # the trainer's check: all equal
    (x, _) = DatasetCatalog.get("tst")
    assert [c for c, _ in boxes(x)] == [0, 1]  # flame -> fire, SMOKE -> smoke


def test_unknown_class_error_lists_both_sides_and_keys(tmp_path):
    make_coco(tmp_path / "c", categories=((1, "flame"), (2, "default"), (3, "smoke")))
    cfg = cfg_with({"tst": {"FORMAT": "coco", "JSON_FILE": str(tmp_path / "c" / "ann.json")}}, classes=["fire", "smoke"], ignore=["default"])
    with pytest.raises(CustomDatasetError) as e:
        register_custom_datasets(cfg)
    msg = str(e.value)
    assert "DATASETS.CUSTOM.tst" in msg and "['flame']" in msg
    assert "['flame', 'default', 'smoke']" in msg and "['fire', 'smoke']" in msg  # both sides
    assert "DATASETS.CLASS_MAP" in msg and "DATASETS.IGNORE_CLASSES" in msg and "ann.json" in msg
    assert "'flame:<a class of DATASETS.CLASSES>'" in msg


def test_unknown_voc_name_found_at_load_names_the_xml(tmp_path):
    root = make_voc_layout(tmp_path / "v")
    cfg = cfg_with({"v": {"FORMAT": "voc", "ROOT": str(root), "SPLIT": "train", "NAMES": ["fire", "smoke"]}}, classes=["fire", "smoke"])
    register_custom_datasets(cfg)  # NAMES given: the xml files are not read yet
    with pytest.raises(CustomDatasetError, match=r"0002\.xml.*'default'.*NAMES"):
        DatasetCatalog.get("v")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(class_map=["fire"]), r"CLASS_MAP entry 'fire' is not of the form 'from:to'"),
        (dict(class_map=["a:fire", "A:smoke"]), r"CLASS_MAP maps 'A' twice"),
        (dict(class_map=["flame:fyre"]), r"CLASS_MAP entries \['flame:fyre'\] map to names"),
        (dict(classes=["fire", "Fire"]), r"names \['Fire', 'fire'\] more than once"),
        (dict(ignore=["smoke"]), r"both in DATASETS.CLASSES .* and in DATASETS.IGNORE_CLASSES"),
    ],
)
def test_class_key_errors(tmp_path, kwargs, pattern):
    make_yolo(tmp_path / "y")
    kwargs.setdefault("classes", ["fire", "smoke"])
    cfg = cfg_with({"y": {"FORMAT": "yolo", "ROOT": str(tmp_path / "y"), "SPLIT": "train"}}, **kwargs)
    with pytest.raises(CustomDatasetError, match=pattern):
        register_custom_datasets(cfg)


# ---------------------------------------------------------------------------------------
# Bad input: the message names the path / file / line and the key
# ---------------------------------------------------------------------------------------
def test_missing_root_names_path_and_key(tmp_path):
    cfg = cfg_with({"y": {"FORMAT": "yolo", "ROOT": str(tmp_path / "nope"), "SPLIT": "train"}}, classes=["fire"])
    with pytest.raises(CustomDatasetFileError, match=r"DATASETS\.CUSTOM\.y\.ROOT: folder '.*nope' does not exist"):
        register_custom_datasets(cfg)


def test_relative_root_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    make_yolo(tmp_path / "y")
    monkeypatch.chdir(tmp_path)
    register_custom_datasets(cfg_with({"y": {"FORMAT": "yolo", "ROOT": "y", "SPLIT": "train"}}, classes=["fire", "smoke"], ignore=["default"]))
    assert DatasetCatalog.get("y")[0]["file_name"] == str(tmp_path / "y" / "train" / "images" / "a.jpg")
    cfg = cfg_with({"y": {"FORMAT": "yolo", "ROOT": "y", "SPLIT": "valid"}}, classes=["fire"])
    with pytest.raises(CustomDatasetFileError, match=r"SPLIT='valid'.*valid/images.*images/valid"):
        register_custom_datasets(cfg)
    cfg = cfg_with({"y": {"FORMAT": "yolo", "ROOT": "missing"}}, classes=["fire"])
    with pytest.raises(CustomDatasetFileError, match="resolved from .missing. against the working directory " + re.escape(str(tmp_path))):
        register_custom_datasets(cfg)


def test_missing_yolo_label_folder_and_data_yaml(tmp_path):
    root = make_yolo(tmp_path / "y")
    os.rename(root / "train" / "labels", root / "train" / "lbl")
    cfg = cfg_with({"y": {"FORMAT": "yolo", "ROOT": str(root), "SPLIT": "train"}}, classes=["fire", "smoke"], ignore=["default"])
    with pytest.raises(CustomDatasetFileError, match=r"LABEL_DIR .*train/labels' does not exist.*FORMAT 'images'"):
        register_custom_datasets(cfg)
    cfg.DATASETS.CUSTOM.y.LABEL_DIR = "train/lbl"
    cfg.DATASETS.CUSTOM.y.DATA_YAML = "other.yaml"
    with pytest.raises(CustomDatasetFileError, match=r"DATASETS\.CUSTOM\.y\.DATA_YAML: file '.*other\.yaml' does not exist"):
        register_custom_datasets(cfg)


def test_yolo_class_index_out_of_range_names_file_and_line(tmp_path):
    root = make_yolo(tmp_path / "y")
    (root / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n\n3 0.5 0.5 0.1 0.1\n")
    register_custom_datasets(cfg_with({"y": {"FORMAT": "yolo", "ROOT": str(root), "SPLIT": "train"}}, classes=["fire", "smoke"], ignore=["default"]))
    with pytest.raises(CustomDatasetError, match=r"labels/a\.txt, line 3: class index 3 is out of range.*0\.\.2"):
        DatasetCatalog.get("y")
    (root / "train" / "labels" / "a.txt").write_text("0 32 16 8 8\n")
    with pytest.raises(CustomDatasetError, match=r"a\.txt, line 1: coordinates must be normalised"):
        DatasetCatalog.get("y")
    (root / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(CustomDatasetError, match=r"a\.txt, line 1: expected 'class cx cy w h'"):
        DatasetCatalog.get("y")


def test_corrupt_and_missing_images_are_named(tmp_path):
    root = make_yolo(tmp_path / "y")
    (root / "train" / "images" / "c.jpg").write_bytes(b"this is not a jpeg")
    register_custom_datasets(cfg_with({"y": {"FORMAT": "yolo", "ROOT": str(root), "SPLIT": "train"}}, classes=["fire", "smoke"], ignore=["default"]))
    with pytest.raises(CustomDatasetError, match=r"cannot read image '.*train/images/c\.jpg'"):
        DatasetCatalog.get("y")
    coco = make_coco(tmp_path / "c")
    os.remove(coco / "imgs" / "y.jpg")
    register_custom_datasets(cfg_with({"c": {"FORMAT": "coco", "ROOT": str(coco), "JSON_FILE": "ann.json", "IMAGE_ROOT": "imgs"}}, classes=["fire", "smoke"], ignore=["default"]))
    with pytest.raises(CustomDatasetFileError, match=r"DATASETS\.CUSTOM\.c\.IMAGE_ROOT: 1 of 2 image file\(s\) do not exist.*imgs/y\.jpg"):
        DatasetCatalog.get("c")


@pytest.mark.parametrize(
    "node, pattern",
    [
        ({"FORMAT": "csv", "ROOT": "."}, r"DATASETS\.CUSTOM\.d\.FORMAT must be one of \['coco', 'voc', 'yolo', 'images'\]"),
        ({"FORMAT": "yolo", "ROOT": ".", "IMAGESETS": "x"}, r"unknown key\(s\) \['IMAGESETS'\] for FORMAT 'yolo'"),
        ({"FORMAT": "coco"}, r"DATASETS\.CUSTOM\.d\.JSON_FILE is required"),
        ({"FORMAT": "voc", "ROOT": ".", "ONE_BASED": "no"}, r"ONE_BASED must be True or False"),
        ({"FORMAT": "yolo", "ROOT": ".", "NAMES": "fire"}, r"NAMES must be a list"),
    ],
)
def test_bad_nodes(node, pattern):
    with pytest.raises(CustomDatasetError, match=pattern):
        register_custom_datasets(cfg_with({"d": node}, classes=["fire"]))


def test_builtin_names_are_not_overridden(tmp_path):
    make_yolo(tmp_path / "y")
    cfg = cfg_with({"synthetic_clear_train": {"FORMAT": "yolo", "ROOT": str(tmp_path / "y"), "SPLIT": "train"}}, classes=["fire"])
    with pytest.raises(CustomDatasetError, match="already registered"):
        register_custom_datasets(cfg)


# ---------------------------------------------------------------------------------------
# Config keys: YAML files and command-line overrides
# ---------------------------------------------------------------------------------------
def test_config_keys_from_file_and_command_line(tmp_path):
    make_yolo(tmp_path / "y")
    (tmp_path / "base.yaml").write_text(
        "DATASETS:\n  CLASSES: ['fire', 'smoke']\n  IGNORE_CLASSES: ['default']\n  CUSTOM:\n"
        f"    src: {{FORMAT: yolo, ROOT: '{tmp_path / 'y'}', SPLIT: train}}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "_BASE_: base.yaml\nDATASETS:\n  CLASS_MAP: ['flame:fire']\n  CUSTOM:\n    src: {SPLIT: valid}\n"
        f"    tgt: {{FORMAT: images, IMAGE_DIR: '{tmp_path / 'y' / 'train' / 'images'}'}}\n"
    )
    cfg = add_mic_config(get_cfg())
    cfg.merge_from_file(str(tmp_path / "child.yaml"))
    assert cfg.DATASETS.CUSTOM.src.FORMAT == "yolo" and cfg.DATASETS.CUSTOM.src.SPLIT == "valid"  # merged with _BASE_
    assert cfg.DATASETS.CUSTOM.tgt.FORMAT == "images" and list(cfg.DATASETS.CLASS_MAP) == ["flame:fire"]
    # the command line changes keys a YAML file set, inside the custom nodes too
    cfg.merge_from_list(["DATASETS.CUSTOM.src.SPLIT", "train", "DATASETS.CLASSES", "['fire','smoke']", "DATASETS.IGNORE_CLASSES", "['Default']"])
    assert register_custom_datasets(cfg) == ["src", "tgt"]
    assert len(DatasetCatalog.get("src")) == 4 and len(DatasetCatalog.get("tgt")) == 4
    cfg.freeze()
    round_trip = add_mic_config(get_cfg())
    (tmp_path / "dump.yaml").write_text(cfg.dump())
    round_trip.merge_from_file(str(tmp_path / "dump.yaml"))  # OUTPUT_DIR/config.yaml reloads
    assert round_trip.DATASETS.CUSTOM.src.SPLIT == "train"
    # ... but cannot declare a new dataset or key (yacs' merge_from_list never adds keys)
    for opts in (["DATASETS.CUSTOM.new.FORMAT", "yolo"], ["DATASETS.CUSTOM.src.LABEL_DIR", "x"]):
        with pytest.raises(AssertionError, match="Non-existent key"):
            round_trip.merge_from_list(opts)


@pytest.mark.parametrize("text", ["DATASETS:\n  CUSTOMS: {}\n", "DATASETS:\n  CLASS: ['fire']\n", "MIC:\n  NEW_KEY: 1\n"])
def test_unknown_keys_outside_the_custom_node_still_error(tmp_path, text):
    (tmp_path / "bad.yaml").write_text(text)
    cfg = add_mic_config(get_cfg())
    with pytest.raises(KeyError, match="Non-existent config key"):
        cfg.merge_from_file(str(tmp_path / "bad.yaml"))
    with pytest.raises(AssertionError, match="Non-existent key"):
        cfg.merge_from_list(["DATASETS.CUSTOMS", "x"])


# ---------------------------------------------------------------------------------------
# The smoke/fire recipes on the real data (read in place)
# ---------------------------------------------------------------------------------------
needs_fire_smoke = pytest.mark.skipif(
    not os.path.isfile(os.path.join(FIRE_SMOKE, "data.yaml")),
    reason=CCTV_SKIP_REASON,
)


def recipe_cfg(name, opts=()):
    cfg = add_mic_config(get_cfg())
    cfg.merge_from_file(os.path.join(RECIPES, name))
    cfg.merge_from_list(list(opts))
    return cfg


def tiny_opts(out):
    """Command-line overrides that turn a recipe into conftest's tiny CPU model."""
    t = tiny_cfg(num_classes=2)
    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(out)]
    for key in (
        "MODEL.BACKBONE.FREEZE_AT", "MODEL.RESNETS.DEPTH", "MODEL.RESNETS.RES2_OUT_CHANNELS", "MODEL.RESNETS.NORM",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "MODEL.FPN.OUT_CHANNELS", "MODEL.ROI_BOX_HEAD.FC_DIM",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "MODEL.RPN.PRE_NMS_TOPK_TEST", "MODEL.RPN.POST_NMS_TOPK_TEST",
        "MODEL.ANCHOR_GENERATOR.SIZES", "MODEL.SADA.IMG_HIDDEN_DIM", "MODEL.SADA.INS_HIDDEN_DIM",
        "MODEL.SADA.INS_PROPOSALS_PER_IMAGE", "DATALOADER.NUM_WORKERS",
    ):
        node = t
        for k in key.split("."):
            node = node[k]
        opts += [key, str(node)]
    return opts + [
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "128",
        "INPUT.MAX_SIZE_TEST", "128", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.IMS_PER_BATCH_TARGET", "2",
        "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0", "SOLVER.BASE_LR", "0.001",
        "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", "0", "TEST.DETECTIONS_PER_IMAGE", "20",
    ]


@needs_fire_smoke
@pytest.mark.parametrize("recipe", ["finetune.yaml", "adapt_mic.yaml"])
def test_recipes_register_the_fire_smoke_set(recipe, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)  # the recipes' paths are relative to the repository root
    cfg = recipe_cfg(recipe)
    register_custom_datasets(cfg)
    check_class_lists(cfg)
    train = DatasetCatalog.get("cctv_fire_smoke_train")
    assert len(train) == 877
    assert all(d["file_name"].startswith(FIRE_SMOKE + os.sep) for d in train)  # read in place
    counts = {0: 0, 1: 0}
    for d in train:
        for a in d["annotations"]:
            counts[a["category_id"]] += 1
    assert counts == {0: 331, 1: 481}  # Fire, smoke; the 160 "default" boxes are gone
    assert sum(not d["annotations"] for d in train) == 160  # fire-free frames kept as background
    for name in ("cctv_fire_smoke_train", *cfg.DATASETS.TRAIN_TARGET, *cfg.DATASETS.TEST):
        assert MetadataCatalog.get(name).thing_classes == ["fire", "smoke"]
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    if recipe == "adapt_mic.yaml":
        res = evaluate_ground_truth(cfg.DATASETS.TEST[0], tmp_path)  # labels survive the evaluator's round trip
        assert res["AP50-fire"] == pytest.approx(100) and res["AP50-smoke"] == pytest.approx(100)


@needs_fire_smoke
def test_adapt_mic_recipe_trains_two_iterations(tmp_path, monkeypatch):
    from detectron2.utils.env import seed_all_rng

    from mic_det.engine import DomainAdaptiveTrainer

    monkeypatch.chdir(REPO)
    # no evaluation (test_recipes_register_the_fire_smoke_set evaluates the test set)
    cfg = recipe_cfg("adapt_mic.yaml", tiny_opts(tmp_path) + ["MIC.PSEUDO_LABEL_THRESHOLD", "0.0", "DATASETS.TEST", "()"])
    assert cfg.MIC.ENABLED and cfg.MODEL.SADA.ENABLED and cfg.MIC.MASK_BLOCK_SIZE == 32 and cfg.MIC.MASK_RATIO == 0.5
    register_custom_datasets(cfg)
    seed_all_rng(0)
    torch.manual_seed(0)
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = trainer.storage.history
    for key in ("total_loss", "loss_cls", "loss_sada_img", "loss_mic_cls"):
        assert all(math.isfinite(v) for v, _ in history(key).values()), key
    assert history("mic/pseudo_boxes_per_image").values()  # the masked target pass ran


@needs_fire_smoke
def test_finetune_recipe_through_train_net(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config", "configs/smoke_fire/finetune.yaml"]
    cmd += tiny_opts(tmp_path) + ["DATASETS.TEST", "()"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    losses = [json.loads(line)["total_loss"] for line in (tmp_path / "metrics.json").read_text().splitlines() if "total_loss" in line]
    assert losses and all(math.isfinite(v) for v in losses)
    assert (tmp_path / "model_final.pth").exists()
