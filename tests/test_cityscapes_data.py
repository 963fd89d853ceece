"""Cityscapes / Foggy Cityscapes loading on a tiny official-layout fixture."""
import importlib.util
import json
import logging
import os
import shutil
import sys

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cityscapes_fixture import EXPECTED_BOXES, write_cityscapes_tree  # noqa: E402

from mic_det.data import cityscapes as cs  # noqa: E402
from mic_det.data.catalog import DatasetNameTaken  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = (
    "cityscapes_fine_train",
    "cityscapes_fine_val",
    "foggy_cityscapes_train",
    "foggy_cityscapes_val",
    "foggy_cityscapes_all_betas_train",
    "foggy_cityscapes_all_betas_val",
)
# Written out, not taken from the module under test.
CLASS_IDS = {"person": 0, "rider": 1, "car": 2, "truck": 3, "bus": 4, "train": 5,
             "motorcycle": 6, "bicycle": 7}


@pytest.fixture(autouse=True)
def _restore_registration():
    yield
    cs.register_all_cityscapes_da(os.getenv("DETECTRON2_DATASETS", "datasets"))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "datasets"
    bases = write_cityscapes_tree(root)
    return str(root), bases


def _base(file_name):
    name = os.path.basename(file_name)
    return name[: name.index("_leftImg8bit")]


def _boxes(d):
    out = []
    for a in d["annotations"]:
        assert a["bbox_mode"] == BoxMode.XYXY_ABS
        assert a["iscrowd"] == 0
        out.append((a["category_id"], [int(v) for v in a["bbox"]]))
    return sorted(out)


def _expected(base):
    return sorted((CLASS_IDS[c], box) for c, box in EXPECTED_BOXES[base])


def _load_prepare_script():
    spec = importlib.util.spec_from_file_location(
        "prepare_cityscapes", os.path.join(REPO, "datasets", "prepare_cityscapes.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_classes_and_label_ids():
    from cityscapesscripts.helpers.labels import name2label

    assert cs.CITYSCAPES_DA_CLASSES == (
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"
    )
    assert cs.CITYSCAPES_LABEL_IDS == (24, 25, 26, 27, 28, 31, 32, 33)
    for name, cid in CLASS_IDS.items():
        assert cs.LABEL_ID_TO_CONTIGUOUS[name2label[name].id] == cid


def test_fixture_instance_png_is_16bit(tree):
    root, _ = tree
    png = os.path.join(root, "cityscapes/gtFine/train/aachen/aachen_000000_000019_gtFine_instanceIds.png")
    arr = cv2.imread(png, cv2.IMREAD_UNCHANGED)
    assert arr.dtype == np.uint16 and arr.ndim == 2 and arr.max() >= 26000


@pytest.mark.parametrize("split", ["train", "val"])
def test_instance_ids_boxes_exact(tree, split):
    root, bases = tree
    dicts = cs.parse_cityscapes_da(root, f"cityscapes_fine_{split}")
    assert [_base(d["file_name"]) for d in dicts] == bases[split]
    assert sorted(d["image_id"] for d in dicts) == list(range(len(dicts)))
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and d["file_name"].endswith("_leftImg8bit.png")
        assert (d["height"], d["width"]) == (64, 128)
        assert _boxes(d) == _expected(_base(d["file_name"])), d["file_name"]
    if split == "val":  # the image without any box is kept
        assert any(not d["annotations"] for d in dicts)


def test_polygons_fallback_gives_same_boxes(tmp_path):
    root = str(tmp_path / "datasets")
    bases = write_cityscapes_tree(root, instance_ids=False)
    assert not any(f.endswith("instanceIds.png") for _, _, fs in os.walk(root) for f in fs)
    for split in ("train", "val"):
        dicts = cs.parse_cityscapes_da(root, f"cityscapes_fine_{split}")
        assert [_base(d["file_name"]) for d in dicts] == bases[split]
        for d in dicts:
            assert (d["height"], d["width"]) == (64, 128)
            assert _boxes(d) == _expected(_base(d["file_name"])), d["file_name"]


def test_png_preferred_over_polygons(tree):
    root, _ = tree
    # A polygons json that disagrees with the PNG must not be used while the PNG exists.
    js = os.path.join(root, "cityscapes/gtFine/val/lindau/lindau_000001_000019_gtFine_polygons.json")
    with open(js, "w") as f:
        json.dump({"imgHeight": 64, "imgWidth": 128, "objects": [
            {"label": "bus", "polygon": [[0, 0], [5, 0], [5, 5]]}]}, f)
    dicts = cs.parse_cityscapes_da(root, "cityscapes_fine_val")
    d = [d for d in dicts if _base(d["file_name"]) == "lindau_000001_000019"][0]
    assert _boxes(d) == [(CLASS_IDS["car"], [10, 10, 20, 20])]


def test_foggy_counts_and_annotations(tree):
    root, bases = tree
    for split in ("train", "val"):
        n = len(bases[split])
        clear = cs.parse_cityscapes_da(root, f"cityscapes_fine_{split}")
        fog = cs.parse_cityscapes_da(root, f"foggy_cityscapes_{split}")
        allb = cs.parse_cityscapes_da(root, f"foggy_cityscapes_all_betas_{split}")
        assert len(clear) == len(fog) == n and len(allb) == 3 * n
        assert all(d["file_name"].endswith("_leftImg8bit_foggy_beta_0.02.png") for d in fog)
        assert all(os.path.isfile(d["file_name"]) for d in fog + allb)
        assert all(f"{os.sep}foggy_cityscapes{os.sep}leftImg8bit_foggy{os.sep}{split}{os.sep}" in d["file_name"]
                   for d in fog + allb)
        for beta in ("0.005", "0.01", "0.02"):
            assert sum(d["file_name"].endswith(f"_beta_{beta}.png") for d in allb) == n
        assert len({d["image_id"] for d in allb}) == 3 * n
        by_base = {_base(d["file_name"]): _boxes(d) for d in clear}
        for d in fog + allb:
            assert _boxes(d) == by_base[_base(d["file_name"])] == _expected(_base(d["file_name"]))


def test_all_betas_missing_beta_is_an_error(tmp_path):
    root = str(tmp_path / "datasets")
    write_cityscapes_tree(root, betas=("0.02",))
    assert len(cs.parse_cityscapes_da(root, "foggy_cityscapes_val")) == 3
    with pytest.raises(FileNotFoundError, match="beta_0.005"):
        cs.parse_cityscapes_da(root, "foggy_cityscapes_all_betas_val")


def test_prepare_script_cache_roundtrip(tree, tmp_path, caplog):
    root, _ = tree
    direct = {n: cs.parse_cityscapes_da(root, n) for n in NAMES}
    written = _load_prepare_script().main(["--root", root, "--num-workers", "2"])
    assert set(written) == set(NAMES)
    assert written["cityscapes_fine_val"] == os.path.join(
        root, "cityscapes", "annotations", "mic_det_cityscapes_fine_val.json")
    assert written["foggy_cityscapes_val"] == os.path.join(
        root, "foggy_cityscapes", "annotations", "mic_det_foggy_cityscapes_val.json")
    for name in NAMES:
        with open(written[name]) as f:
            text = f.read()
        assert root not in text and str(tmp_path) not in text  # relative file names only
        assert cs.read_cache(root, name) == direct[name]

    cs.register_all_cityscapes_da(root)
    with caplog.at_level(logging.INFO, logger=cs.__name__):
        loaded = DatasetCatalog.get("foggy_cityscapes_val")
    assert loaded == direct["foggy_cityscapes_val"]
    assert "cache" in caplog.text

    # Move the root: the cache still works and points at the new location.
    moved = str(tmp_path / "moved")
    shutil.move(root, moved)
    cs.register_all_cityscapes_da(moved)
    for name in NAMES:
        dicts = DatasetCatalog.get(name)
        assert [_boxes(d) for d in dicts] == [_boxes(d) for d in direct[name]]
        assert all(d["file_name"].startswith(moved) and os.path.isfile(d["file_name"]) for d in dicts)


def test_loader_without_cache_parses_and_hints(tree, caplog):
    root, _ = tree
    cs.register_all_cityscapes_da(root)
    with caplog.at_level(logging.INFO, logger=cs.__name__):
        dicts = DatasetCatalog.get("cityscapes_fine_train")
    assert [_boxes(d) for d in dicts] == [_expected(_base(d["file_name"])) for d in dicts]
    assert "prepare_cityscapes.py" in caplog.text


def test_missing_root_error(tmp_path):
    missing = str(tmp_path / "nowhere")
    cs.register_all_cityscapes_da(missing)  # registration never touches the disk
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("foggy_cityscapes_val")
    msg = str(e.value)
    assert missing in msg and "DETECTRON2_DATASETS" in msg
    assert "foggy_cityscapes_val" in msg and "datasets/README.md" in msg


def test_missing_image_dir_error(tmp_path):
    root = str(tmp_path / "datasets")
    write_cityscapes_tree(root, foggy=False)
    with pytest.raises(FileNotFoundError) as e:
        cs.parse_cityscapes_da(root, "foggy_cityscapes_val")
    assert os.path.join(root, "foggy_cityscapes") in str(e.value)
    assert "DETECTRON2_DATASETS" in str(e.value)


def test_missing_gt_file_error_names_both(tree):
    root, _ = tree
    gt = os.path.join(root, "cityscapes/gtFine/val/lindau/lindau_000001_000019")
    os.remove(gt + "_gtFine_instanceIds.png")
    os.remove(gt + "_gtFine_polygons.json")
    with pytest.raises(FileNotFoundError) as e:
        cs.parse_cityscapes_da(root, "cityscapes_fine_val")
    msg = str(e.value)
    assert "lindau_000001_000019_leftImg8bit.png" in msg
    assert gt + "_gtFine_instanceIds.png" in msg and gt + "_gtFine_polygons.json" in msg


def test_empty_image_dir_error(tree):
    root, _ = tree
    img_dir = os.path.join(root, "cityscapes", "leftImg8bit", "val")
    shutil.rmtree(img_dir)
    os.makedirs(os.path.join(img_dir, "lindau"))
    with pytest.raises(FileNotFoundError) as e:
        cs.parse_cityscapes_da(root, "cityscapes_fine_val")
    msg = str(e.value)
    assert img_dir in msg and "_leftImg8bit.png" in msg and "no images" in msg


def test_registration_names_and_metadata(tmp_path):
    import detectron2.data.datasets  # noqa: F401  (detectron2's builtin registrations)

    registered = DatasetCatalog.list()
    for name in NAMES:
        assert name in registered
    assert "cityscapes_fine_instance_seg_train" in registered  # builtins are still there
    root = str(tmp_path / "a")
    cs.register_all_cityscapes_da(root)
    cs.register_all_cityscapes_da(str(tmp_path / "b"))  # idempotent, another root wins
    for name in NAMES:
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(CLASS_IDS)
        assert meta.evaluator_type == "coco"
        assert meta.domain == ("cityscapes" if name.startswith("cityscapes") else "foggy")
        assert meta.image_root.startswith(str(tmp_path / "b"))
        assert meta.gt_dir == os.path.join(str(tmp_path / "b"), "cityscapes", "gtFine", name.split("_")[-1])
    assert MetadataCatalog.get("foggy_cityscapes_val").image_root == os.path.join(
        str(tmp_path / "b"), "foggy_cityscapes", "leftImg8bit_foggy", "val")
    # A name registered by someone else is not silently replaced.
    DatasetCatalog.remove("cityscapes_fine_val")
    DatasetCatalog.register("cityscapes_fine_val", lambda: [])
    try:
        with pytest.raises(DatasetNameTaken, match="already registered by another module"):
            cs.register_all_cityscapes_da(root)
    finally:
        DatasetCatalog.remove("cityscapes_fine_val")


# ---------------------------------------------------------------------------------------
# Cross-checks against the field's own Cityscapes code. mic_det keeps its own parser
# (docs/datasets.md, "Why mic_det parses gtFine itself"); these tests pin how it relates
# to detectron2's loader and cityscapesscripts, so a difference cannot creep in unseen.
# ---------------------------------------------------------------------------------------
def test_same_boxes_as_detectron2_cityscapes_loader_up_to_its_conventions(tree):
    """detectron2's load_cityscapes_instances, on the same gtFine: the same instances and
    class ids; its boxes end on the last pixel (ours one past it, like COCO widths); it
    drops one-pixel-wide instances and keeps group regions as crowd annotations."""
    from detectron2.data.datasets.cityscapes import load_cityscapes_instances

    root, _ = tree
    for split in ("train", "val"):
        gt_dir = os.path.join(root, "cityscapes", "gtFine", split)
        for dirpath, _, files in os.walk(gt_dir):  # it insists on a labelIds PNG existing
            for f in files:
                if f.endswith("_gtFine_instanceIds.png"):
                    shutil.copy(os.path.join(dirpath, f),
                                os.path.join(dirpath, f.replace("instanceIds", "labelIds")))
        theirs = load_cityscapes_instances(
            os.path.join(root, "cityscapes", "leftImg8bit", split), gt_dir,
            from_json=False, to_polygons=False)
        ours = {d["file_name"]: d for d in cs.parse_cityscapes_da(root, f"cityscapes_fine_{split}")}
        assert sorted(d["file_name"] for d in theirs) == sorted(ours)
        crowd_seen = 0
        for d in theirs:
            converted = []
            for a in d["annotations"]:
                if a["iscrowd"]:
                    crowd_seen += 1
                    continue
                x0, y0, x1, y1 = (int(v) for v in a["bbox"])
                converted.append((a["category_id"], [x0, y0, x1 + 1, y1 + 1]))
            expected = [b for b in _boxes(ours[d["file_name"]])
                        if b[1][2] - b[1][0] > 1 and b[1][3] - b[1][1] > 1]
            assert sorted(converted) == expected, d["file_name"]
        # The group regions of the fixture (cargroup in train; persongroup and
        # bicyclegroup in val) are crowd annotations there and absent here.
        assert crowd_seen == {"train": 1, "val": 2}[split]


def test_polygon_rasterisation_matches_cityscapesscripts(tree):
    """Our polygon fallback draws exactly what cityscapesscripts' json2instanceImg draws,
    on every file it can draw; it stops on an empty polygon, which ours skips."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage

    from mic_det.data.cityscapes_gtfine import rasterize_polygons

    root, _ = tree
    compared = failed = 0
    for dirpath, _, files in os.walk(os.path.join(root, "cityscapes", "gtFine")):
        for f in sorted(files):
            if not f.endswith("_gtFine_polygons.json"):
                continue
            path = os.path.join(dirpath, f)
            with open(path) as fh:
                ours = rasterize_polygons(json.load(fh))
            annotation = Annotation()
            annotation.fromJsonFile(path)
            try:
                theirs = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.int32)
            except TypeError:  # the fixture's empty polygon
                failed += 1
                continue
            np.testing.assert_array_equal(ours, theirs, err_msg=path)
            compared += 1
    assert (compared, failed) == (5, 1)
