"""The embedded synthetic clear -> foggy shift: generation, caching, registration."""
import json
import math
import os
import threading

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools.coco import COCO

from mic_det.data import synthetic as syn
from mic_det.datagen import scenes
from mic_det.datagen import synthetic_shift as gen

SMALL = dict(image_size=(96, 192), num_train=4, num_val=2)
NAMES = ("synthetic_clear_train", "synthetic_clear_val", "synthetic_foggy_train", "synthetic_foggy_val")


def _files(path):
    out = {}
    for dirpath, _, names in os.walk(path):
        for n in names:
            full = os.path.join(dirpath, n)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


@pytest.fixture(scope="module")
def default_size_set(tmp_path_factory):
    """Default image size, a few images per split."""
    root = str(tmp_path_factory.mktemp("synth"))
    path = gen.generate_synthetic_shift(root, num_train=6, num_val=3)
    return root, path


@pytest.fixture
def restore_registration():
    yield
    syn.register_synthetic_shift(os.getenv("DETECTRON2_DATASETS", "datasets"))


def test_layout_and_coco_json(default_size_set):
    root, path = default_size_set
    assert path == os.path.join(root, "synthetic_shift")
    H, W = gen.DEFAULT_IMAGE_SIZE
    assert (H, W) == (160, 320)
    seen = set()
    for domain in ("clear", "foggy"):
        for split, n in (("train", 6), ("val", 3)):
            coco = COCO(os.path.join(path, "annotations", f"{domain}_{split}.json"))
            cats = coco.loadCats(coco.getCatIds())
            assert [(c["id"], c["name"]) for c in cats] == [(1, "car"), (2, "person"), (3, "bus")]
            assert len(coco.getImgIds()) == n
            for img_id in coco.getImgIds():
                info = coco.loadImgs(img_id)[0]
                img = cv2.imread(os.path.join(path, domain, split, info["file_name"]))
                assert img is not None and img.shape == (H, W, 3) == (info["height"], info["width"], 3)
                anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
                assert 2 <= len(anns) <= 8
                for a in anns:
                    x, y, w, h = a["bbox"]
                    assert x >= 0 and y >= 0 and x + w <= W and y + h <= H
                    assert w >= 6 and h >= 6
                    assert a["area"] == pytest.approx(w * h)
                    assert a["iscrowd"] == 0
                    seen.add(a["category_id"])
                    # the box holds something: it is not flat background
                    crop = img[int(y) : int(y + h), int(x) : int(x + w)]
                    assert crop.std() > 1.0
                if domain == "foggy":
                    assert 0.1 < info["beta"] < 0.5
                    assert all(0.75 < a < 0.95 for a in info["airlight"])
    assert seen == {1, 2, 3}
    with open(os.path.join(path, "VERSION")) as f:
        assert json.load(f)["version"] == gen.GENERATOR_VERSION


def test_perspective_near_objects_are_bigger(default_size_set):
    _, path = default_size_set
    coco = COCO(os.path.join(path, "annotations", "clear_train.json"))
    bottoms, heights = [], []
    for a in coco.loadAnns(coco.getAnnIds(catIds=[2])):  # persons are never wider than tall
        x, y, w, h = a["bbox"]
        bottoms.append(y + h)
        heights.append(h)
    assert len(heights) >= 3
    assert np.corrcoef(bottoms, heights)[0, 1] > 0.5


def test_deterministic_bytes_and_seed_changes_output(tmp_path):
    a = _files(gen.generate_synthetic_shift(str(tmp_path / "a"), seed=3, **SMALL))
    b = _files(gen.generate_synthetic_shift(str(tmp_path / "b"), seed=3, **SMALL))
    c = _files(gen.generate_synthetic_shift(str(tmp_path / "c"), seed=4, **SMALL))
    assert len(a) == 2 * (4 + 2) + 4 + 1  # PNGs + 4 json + VERSION
    assert a == b
    pngs = [k for k in a if k.endswith(".png")]
    assert all(a[k] != c[k] for k in pngs)
    # source and target are different scenes, not fogged copies of each other
    with open(tmp_path / "a/synthetic_shift/annotations/clear_train.json") as f:
        clear_boxes = [x["bbox"] for x in json.load(f)["annotations"]]
    with open(tmp_path / "a/synthetic_shift/annotations/foggy_train.json") as f:
        foggy_boxes = [x["bbox"] for x in json.load(f)["annotations"]]
    assert clear_boxes != foggy_boxes

def test_fog_fades_far_rows_and_objects_more_than_near_ones():
    H, W = gen.DEFAULT_IMAGE_SIZE
    far_ratio, near_ratio = [], []
    for k in range(6):
        # the same scene rendered without and with fog
        clear, scene, none = scenes.make_image((0, 1, 0, k), H, W, "clear")
        foggy, scene_f, fog = scenes.make_image((0, 1, 0, k), H, W, "foggy")
        assert none is None and np.array_equal(scene.depth, scene_f.depth)
        assert [o.box for o in scene.objects] == [o.box for o in scene_f.objects]
        hz, beta = scene.horizon, fog["beta"]
        airlight = np.float32(fog["airlight"])
        assert scenes._BETA_RANGE[0] <= beta <= scenes._BETA_RANGE[1]
        assert np.all((airlight >= 0.78) & (airlight <= 0.92))
        J, I = clear.astype(np.float32) / 255, foggy.astype(np.float32) / 255

        # depth: 1 at the bottom row, growing toward the horizon, maximal in the sky
        row_depth = scenes._ground_depth(np.arange(H), hz, H)
        assert row_depth[-1] == pytest.approx(1.0)
        assert np.all(np.diff(row_depth[hz + 1 :]) <= 0) and row_depth[hz + 5] > 5 * row_depth[-1]
        assert np.all(row_depth[: hz + 1] == row_depth.max())
        sky = scene.depth >= scenes._DEPTH_MAX
        assert sky[: hz // 2].any()
        assert np.abs(I[sky] - airlight).max() < 0.01  # the sky turns into airlight

        # per-row contrast of the ground (road, markings, sidewalks) in both renderings
        ground = (scene.depth == row_depth[:, None]) & (np.arange(H) > hz)[:, None]
        g = H - 1 - hz
        bands = {"far": range(hz + 2, hz + 2 + g // 5), "near": range(H - g // 5, H)}
        ratio = {}
        for name, rows in bands.items():
            c_fog = [I[r][ground[r]].std() for r in rows if ground[r].sum() > W // 4]
            c_clear = [J[r][ground[r]].std() for r in rows if ground[r].sum() > W // 4]
            ratio[name] = np.sum(c_fog) / np.sum(c_clear)
        far_ratio.append(ratio["far"])
        near_ratio.append(ratio["near"])

        # objects keep exp(-beta * d) of their contrast to the airlight, d from their ground row
        vis = []
        for o in scene.objects:
            x0, y0 = o.x0, o.y0
            h, w = o.mask.shape
            m = o.mask & (scene.depth[y0 : y0 + h, x0 : x0 + w] == o.depth)
            m &= np.abs(J[y0 : y0 + h, x0 : x0 + w] - airlight).mean(-1) > 0.1
            if m.sum() < 10:
                continue
            kept = (np.abs(I[y0 : y0 + h, x0 : x0 + w][m] - airlight).mean()
                    / np.abs(J[y0 : y0 + h, x0 : x0 + w][m] - airlight).mean())
            assert kept == pytest.approx(np.exp(-beta * o.depth), abs=0.06)
            vis.append((o.depth, kept))
        vis.sort()
        assert len(vis) >= 2 and vis[0][1] > vis[-1][1]
    far_ratio, near_ratio = np.array(far_ratio), np.array(near_ratio)
    assert np.all(far_ratio < near_ratio)
    assert far_ratio.mean() < 0.3  # the horizon is washed out
    assert near_ratio.mean() > 0.6  # near the camera things stay clearly visible


def test_catalog_generates_on_first_use(tmp_path, restore_registration):
    root = str(tmp_path / "datasets")
    syn.register_synthetic_shift(str(tmp_path / "elsewhere"), **SMALL)
    syn.register_synthetic_shift(root, **SMALL)  # re-registering replaces the first
    path = os.path.join(root, "synthetic_shift")
    meta = MetadataCatalog.get("synthetic_foggy_val")
    assert meta.json_file == os.path.join(path, "annotations", "foggy_val.json")
    assert meta.image_root == os.path.join(path, "foggy", "val")
    assert meta.thing_classes == ["car", "person", "bus"]
    assert meta.evaluator_type == "coco" and meta.domain == "foggy"
    assert MetadataCatalog.get("synthetic_clear_train").domain == "clear"
    assert not os.path.exists(path)

    dicts = DatasetCatalog.get("synthetic_foggy_val")
    assert os.path.isfile(meta.json_file)
    assert not os.path.exists(os.path.join(str(tmp_path), "elsewhere"))
    assert len(dicts) == 2
    classes = set()
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and d["file_name"].startswith(meta.image_root)
        assert (d["height"], d["width"]) == (96, 192)
        assert d["domain"] == "foggy"
        assert d["annotations"]
        for a in d["annotations"]:
            assert a["category_id"] in (0, 1, 2)
            classes.add(a["category_id"])
    train = DatasetCatalog.get("synthetic_clear_train")
    assert len(train) == 4 and {d["domain"] for d in train} == {"clear"}
    for a in (a for d in train for a in d["annotations"]):
        classes.add(a["category_id"])
    assert classes == {0, 1, 2}
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    assert set(NAMES) <= set(DatasetCatalog.list())


def test_stale_or_changed_cache_regenerates(tmp_path):
    root = str(tmp_path)
    path = gen.generate_synthetic_shift(root, **SMALL)
    fresh = _files(path)
    sentinel = os.path.join(path, "sentinel")

    open(sentinel, "w").close()
    assert gen.generate_synthetic_shift(root, **SMALL) == path
    assert os.path.exists(sentinel)  # up to date: reused as is

    with open(os.path.join(path, "VERSION")) as f:
        version = json.load(f)
    with open(os.path.join(path, "VERSION"), "w") as f:
        json.dump(dict(version, version=gen.GENERATOR_VERSION - 1), f)
    gen.generate_synthetic_shift(root, **SMALL)
    assert not os.path.exists(sentinel)  # stale generator version: rebuilt
    assert _files(path) == fresh

    gen.generate_synthetic_shift(root, **dict(SMALL, num_val=3))  # other parameters
    with open(os.path.join(path, "annotations", "clear_val.json")) as f:
        assert len(json.load(f)["images"]) == 3
    assert sorted(os.listdir(root)) == [".synthetic_shift.lock", "synthetic_shift"]


def test_concurrent_callers_share_one_complete_set(tmp_path):
    root = str(tmp_path)
    barrier = threading.Barrier(3)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            path = gen.generate_synthetic_shift(root, **SMALL)
            with open(os.path.join(path, "annotations", "foggy_train.json")) as f:
                results.append((path, len(json.load(f)["images"])))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 3 and len(set(results)) == 1 and results[0][1] == 4
    assert sorted(os.listdir(root)) == [".synthetic_shift.lock", "synthetic_shift"]


def test_command_line(tmp_path, capsys):
    assert gen.main(["--root", str(tmp_path), "--num-train", "3", "--num-val", "2",
                     "--height", "96", "--width", "192"]) == 0
    out = capsys.readouterr().out
    assert "synthetic_foggy_val: 2 images" in out and "synthetic_clear_train: 3 images" in out
    assert os.path.isfile(tmp_path / "synthetic_shift" / "clear" / "train" / "000002.png")


def test_coco_evaluator_reads_the_registered_json(tmp_path, restore_registration):
    import torch
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, BoxMode, Instances

    syn.register_synthetic_shift(str(tmp_path), **SMALL)
    dicts = DatasetCatalog.get("synthetic_foggy_val")
    evaluator = COCOEvaluator("synthetic_foggy_val", output_dir=None)
    evaluator.reset()
    for d in dicts:  # the ground truth as predictions: perfect AP
        inst = Instances((d["height"], d["width"]))
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    result = evaluator.evaluate()["bbox"]
    assert result["AP"] == pytest.approx(100.0)


def test_dusk_is_darker_orange_and_denser_than_foggy_on_the_same_scene():
    """The harder target: the same scene at dusk is darker, warmer (less blue than red)
    and in denser fog than in the foggy target; boxes do not move."""
    H, W = gen.DEFAULT_IMAGE_SIZE
    for k in range(4):
        foggy, scene_f, fog = scenes.make_image((0, 2, 0, k), H, W, "foggy")
        dusk, scene_d, light = scenes.make_image((0, 2, 0, k), H, W, "dusk")
        again, _, _ = scenes.make_image((0, 2, 0, k), H, W, "dusk")
        assert np.array_equal(dusk, again)  # deterministic
        assert [o.box for o in scene_f.objects] == [o.box for o in scene_d.objects]
        assert scenes._DUSK_BETA_RANGE[0] <= light["beta"] <= scenes._DUSK_BETA_RANGE[1]
        assert scenes._DUSK_BETA_RANGE[0] > sum(scenes._BETA_RANGE) / 2  # denser than the usual fog
        assert dusk.mean() < 0.6 * foggy.mean()
        assert dusk[..., 2].mean() < 0.8 * dusk[..., 0].mean()  # RGB: blue well below red
    with pytest.raises(ValueError, match="style"):
        scenes.make_image((0, 0, 0, 0), H, W, "night")


def test_dusk_set_is_its_own_cache_and_leaves_the_clear_foggy_stamp_alone(tmp_path):
    root = str(tmp_path)
    path = gen.generate_synthetic_shift(root, (64, 96), 3, 2, dirname=gen.DUSK_DIRNAME, domains=gen.DUSK_DOMAINS)
    assert sorted(os.listdir(os.path.join(path, "annotations"))) == ["dusk_train.json", "dusk_val.json"]
    assert not os.path.exists(os.path.join(root, gen.DATASET_DIRNAME))  # the usual set is not made with it
    with open(os.path.join(path, "VERSION")) as f:
        stamp = json.load(f)
    assert stamp["domains"] == ["dusk"] and stamp["dusk_version"] == gen.DUSK_VERSION
    # a dusk set drawn by an earlier dusk style is redrawn, not reused
    with open(os.path.join(path, "VERSION"), "w") as f:
        json.dump(dict(stamp, dusk_version=gen.DUSK_VERSION - 1), f)
    sentinel = os.path.join(path, "drawn_by_the_old_style")
    open(sentinel, "w").close()
    gen.generate_synthetic_shift(root, (64, 96), 3, 2, dirname=gen.DUSK_DIRNAME, domains=gen.DUSK_DOMAINS)
    assert not os.path.exists(sentinel)
    with open(os.path.join(path, "VERSION")) as f:
        assert json.load(f)["dusk_version"] == gen.DUSK_VERSION
    assert "dusk_version" not in gen.shift_params((64, 96), 3, 2, 0)  # nor in the clear -> foggy stamp
    assert "domains" not in gen.shift_params((64, 96), 3, 2, 0)  # caches written before the dusk set still match
    # dusk scenes are drawn from their own seeds: not the foggy target's scenes
    foggy = gen.generate_synthetic_shift(root, (64, 96), 3, 2)
    with open(os.path.join(path, "annotations", "dusk_train.json")) as f, \
            open(os.path.join(foggy, "annotations", "foggy_train.json")) as g:
        assert [a["bbox"] for a in json.load(f)["annotations"]] != [a["bbox"] for a in json.load(g)["annotations"]]


def test_dusk_datasets_are_registered_beside_the_usual_ones(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    syn.register_synthetic_shift(str(tmp_path), image_size=(64, 96), num_train=2, num_val=2)
    try:
        dicts = DatasetCatalog.get("synthetic_dusk_val")
        assert len(dicts) == 2 and all(d["domain"] == "dusk" for d in dicts)
        assert dicts[0]["file_name"].startswith(os.path.join(str(tmp_path), "synthetic_dusk", "dusk", "val"))
        assert MetadataCatalog.get("synthetic_dusk_train").thing_classes == ["car", "person", "bus"]
        assert not os.path.exists(os.path.join(str(tmp_path), "synthetic_shift"))  # generated on use only
    finally:
        syn.register_synthetic_shift(os.getenv("DETECTRON2_DATASETS", "datasets"))


def test_precision_and_recall_at_the_pseudo_label_threshold(tmp_path, restore_registration):
    """What a teacher's pseudo-labels would be worth: per image, the first half of the
    objects found at 0.9, the rest at 0.5 (below the threshold), one wrong box at 0.85.
    Precision and recall at 0.8 count only the boxes at or above it."""
    import torch
    from detectron2.structures import Boxes, BoxMode, Instances

    from mic_det.evaluation import DomainAdaptationCOCOEvaluator

    syn.register_synthetic_shift(str(tmp_path), **SMALL)
    dicts = DatasetCatalog.get("synthetic_foggy_val")  # generates the set
    evaluator = DomainAdaptationCOCOEvaluator("synthetic_foggy_val", score_threshold=0.8)
    evaluator.reset()
    found = total = wrong = 0
    assert len(dicts) == 2 and all(d["annotations"] for d in dicts)
    for d in dicts:
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        classes = [a["category_id"] for a in d["annotations"]]
        if d is dicts[-1]:  # an image where nothing is detected: its objects still count as missed
            total += len(boxes)
            continue
        n, k = len(boxes), (len(boxes) + 1) // 2
        scores = [0.9] * k + [0.5] * (n - k)
        boxes.append([0.0, 0.0, 8.0, 8.0])  # the sky's corner: no object there
        scores.append(0.85)
        classes.append(0)
        found, total, wrong = found + k, total + n, wrong + 1
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.tensor(scores)
        inst.pred_classes = torch.tensor(classes)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    assert found < total
    result = evaluator.evaluate()["bbox"]
    assert result["precision50@0.8"] == pytest.approx(100.0 * found / (found + wrong))
    assert result["recall50@0.8"] == pytest.approx(100.0 * found / total)
    # no detection on any image: nothing wrong (precision undefined), nothing found
    evaluator.reset()
    for d in dicts:
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes, inst.scores = Boxes(torch.zeros(0, 4)), torch.zeros(0)
        inst.pred_classes = torch.zeros(0, dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    result = evaluator.evaluate()["bbox"]
    assert math.isnan(result["precision50@0.8"]) and result["recall50@0.8"] == 0.0
