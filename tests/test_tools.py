"""The user tools as a user runs them: export to stock detectron2, prediction on images
and video, and the visualisations, on a tiny model whose teacher and student predict
different classes (so a mix-up shows)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from conftest import tiny_cfg
from mic_det.data.synthetic import register_synthetic_shift
from mic_det.modeling import EMATeacher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import export_model  # noqa: E402
import predict  # noqa: E402
import visualize  # noqa: E402

# Class biases of the ROI classifier (car, person, bus, background): the student mostly
# says car (softmax ~0.49), the teacher mostly bus (~0.71).
STUDENT_BIAS = [1.5, 1.0, 0.0, 0.0]
TEACHER_BIAS = [0.0, 0.0, 2.0, 0.0]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    register_synthetic_shift(root, image_size=(96, 160), num_train=8, num_val=4)
    DatasetCatalog.get("synthetic_foggy_val")  # generates the set
    yield os.path.join(root, "synthetic_shift")
    register_synthetic_shift(os.getenv("DETECTRON2_DATASETS", "datasets"))


@pytest.fixture(scope="module")
def run(synthetic, tmp_path_factory):
    """A training config and a checkpoint (student, teacher, SADA heads) as training writes them."""
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_cfg(sada=True, mic=True)
    cfg.DATASETS.TRAIN = ("synthetic_clear_train",)
    cfg.DATASETS.TRAIN_TARGET = ("synthetic_foggy_train",)
    cfg.DATASETS.TEST = ("synthetic_foggy_val",)
    cfg.TEST.EVAL_MODEL = "both"
    cfg.MIC.MASK_BLOCK_SIZE = 16
    cfg.MIC.PSEUDO_LABEL_THRESHOLD = 0.3
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    cfg.OUTPUT_DIR = str(out)
    torch.manual_seed(0)
    student = build_model(cfg)
    teacher = EMATeacher(student)
    with torch.no_grad():
        student.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor(STUDENT_BIAS))
        teacher.model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor(TEACHER_BIAS))
        teacher.model.roi_heads.box_predictor.bbox_pred.weight.normal_(0, 0.01)  # boxes differ too
    DetectionCheckpointer(student, str(out), teacher=teacher).save("model_final", iteration=3)
    (out / "config.yaml").write_text(cfg.dump())
    assert any(k.startswith("sada.") for k in student.state_dict())
    return {"cfg": cfg, "config": str(out / "config.yaml"), "weights": str(out / "model_final.pth"), "dir": out}


@pytest.fixture(scope="module")
def images(synthetic, tmp_path_factory):
    """Two foggy scenes and one drawn with cv2 at another size."""
    folder = tmp_path_factory.mktemp("images")
    for name in ("000000.png", "000001.png"):
        shutil.copy(os.path.join(synthetic, "foggy", "val", name), folder / name)
    drawn = np.full((120, 200, 3), 90, np.uint8)
    cv2.rectangle(drawn, (20, 40), (90, 80), (0, 0, 200), -1)
    cv2.circle(drawn, (150, 60), 25, (0, 200, 0), -1)
    cv2.imwrite(str(folder / "drawn.jpg"), drawn)
    return folder


@pytest.fixture(scope="module")
def video(synthetic, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("video") / "clip.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (160, 96))
    assert writer.isOpened()
    for i in range(5):
        writer.write(cv2.imread(os.path.join(synthetic, "foggy", "train", f"{i:06d}.png")))
    writer.release()
    return path


def mic_det_predictions(run, which, image_files):
    """mic_det's own inference (DomainAdaptiveRCNN, eval mode) with the checkpoint's
    student or teacher, loaded without the tools' helpers."""
    cfg = run["cfg"].clone()
    cfg.MODEL.WEIGHTS = run["weights"]
    predictor = DefaultPredictor(cfg)  # builds DomainAdaptiveRCNN, loads the student
    assert type(predictor.model).__name__ == "DomainAdaptiveRCNN"
    if which == "teacher":
        teacher = EMATeacher(predictor.model)
        DetectionCheckpointer(predictor.model, teacher=teacher).load(run["weights"], checkpointables=["teacher"])
        predictor.model = teacher.model
    out = []
    for f in image_files:
        inst = predictor(cv2.imread(f))["instances"]
        out.append({"boxes": inst.pred_boxes.tensor, "scores": inst.scores, "classes": inst.pred_classes})
    return out


STOCK_SCRIPT = textwrap.dedent(
    """
    import sys, cv2, torch
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor
    exports, image_files, out_path = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]
    results = {}
    for d in exports:
        cfg = get_cfg()
        cfg.merge_from_file(d + "/config.yaml")
        predictor = DefaultPredictor(cfg)
        assert type(predictor.model).__name__ == "GeneralizedRCNN"
        results[d] = []
        for f in image_files:
            inst = predictor(cv2.imread(f))["instances"]
            results[d].append({"boxes": inst.pred_boxes.tensor, "scores": inst.scores, "classes": inst.pred_classes})
    assert "mic_det" not in sys.modules, "the export needed mic_det"
    torch.save(results, out_path)
    """
)


def test_export_runs_in_stock_detectron2_like_mic_det(run, images, tmp_path):
    files = sorted(str(images / f) for f in os.listdir(images))
    exports = {}
    for which in ("teacher", "student"):
        d = tmp_path / which
        export_model.main(["--config", run["config"], "--weights", run["weights"], "--output", str(d), "--which", which])
        state = torch.load(d / "model.pth")
        assert set(state) == {"model"}
        assert not any(k.startswith(("sada.", "model.")) for k in state["model"])
        assert json.loads((d / "classes.json").read_text())["thing_classes"] == ["car", "person", "bus"]
        exported = yaml.safe_load((d / "config.yaml").read_text())
        assert exported["MODEL"]["META_ARCHITECTURE"] == "GeneralizedRCNN"
        assert "SADA" not in exported["MODEL"] and "MIC" not in exported and "TRAIN_TARGET" not in exported["DATASETS"]
        exports[which] = str(d)

    script = tmp_path / "stock.py"
    script.write_text(STOCK_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONPATH="")
    p = subprocess.run(
        [sys.executable, str(script), ",".join(exports.values()), ",".join(files), str(tmp_path / "stock.pt")],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    stock = torch.load(tmp_path / "stock.pt")

    expected = {which: mic_det_predictions(run, which, files) for which in exports}
    for which, d in exports.items():
        for got, want in zip(stock[d], expected[which]):
            assert len(want["scores"]) > 0
            assert torch.equal(got["classes"], want["classes"]), which
            assert torch.allclose(got["boxes"], want["boxes"], atol=1e-3), which
            assert torch.allclose(got["scores"], want["scores"], atol=1e-5), which
    # the two networks really differ, so a teacher/student mix-up cannot pass
    t, s = expected["teacher"][0], expected["student"][0]
    assert (t["classes"] == 2).float().mean() > 0.5 and (s["classes"] == 0).float().mean() > 0.5


def test_torchscript_export_matches_the_eager_model(run, images, tmp_path):
    export_model.main([
        "--config", run["config"], "--weights", run["weights"], "--output", str(tmp_path), "--which", "student",
        "--torchscript", "--sample-image", str(images / "000000.png"),
    ])
    traced = torch.jit.load(str(tmp_path / "model.ts"))
    model = build_model(run["cfg"])
    DetectionCheckpointer(model).load(run["weights"])
    model.eval()
    image = torch.as_tensor(cv2.imread(str(images / "drawn.jpg")).astype("float32").transpose(2, 0, 1))  # another size
    with torch.no_grad():
        want = model.inference([{"image": image}], do_postprocess=False)[0]
        boxes, classes, scores, size = traced(image)
    assert len(scores) > 0 and tuple(size.tolist()) == want.image_size
    assert torch.equal(classes, want.pred_classes)
    assert torch.allclose(boxes, want.pred_boxes.tensor, atol=1e-3) and torch.allclose(scores, want.scores, atol=1e-5)


def read_detections(path):
    entries = json.loads(open(path).read())
    for e in entries:
        assert set(e) >= {"image_id", "file_name", "category_id", "category_name", "bbox", "score"}
        assert len(e["bbox"]) == 4 and e["bbox"][2] >= 0 and e["bbox"][3] >= 0
        assert e["category_id"] == ["car", "person", "bus"].index(e["category_name"]) + 1  # the dataset's ids
    return entries


def test_predict_images_threshold_classes_and_teacher_by_default(run, images, tmp_path):
    common = ["--config", run["config"], "--weights", run["weights"], "--input", str(images)]
    # default: the teacher, which mostly says bus
    path = predict.main(common + ["--output", str(tmp_path / "a"), "--score-threshold", "0.3"])
    entries = read_detections(path)
    assert entries and {e["category_name"] for e in entries} == {"bus"}
    assert {e["file_name"] for e in entries} == {"000000.png", "000001.png", "drawn.jpg"}
    for name in ("000000.png", "000001.png", "drawn.jpg"):
        annotated = cv2.imread(str(tmp_path / "a" / name))
        assert annotated is not None and annotated.shape == cv2.imread(str(images / name)).shape
        assert not np.array_equal(annotated, cv2.imread(str(images / name)))  # boxes were drawn

    low = read_detections(predict.main(common + ["--output", str(tmp_path / "b"), "--which", "student", "--score-threshold", "0.05"]))
    threshold = float(np.median([e["score"] for e in low]))
    path = predict.main(common + ["--output", str(tmp_path / "c"), "--which", "student", "--score-threshold", str(threshold)])
    entries = read_detections(path)
    assert 0 < len(entries) < len(low) and min(e["score"] for e in entries) >= threshold

    path = predict.main(common + ["--output", str(tmp_path / "d"), "--which", "student", "--score-threshold", "0.1", "--classes", "person"])
    entries = read_detections(path)
    assert entries and {e["category_name"] for e in entries} == {"person"}
    # the class filter comes before TEST.DETECTIONS_PER_IMAGE (20), not after
    per_image = [sum(e["image_id"] == i for e in entries) for i in range(3)]
    assert max(per_image) == 20


def test_predict_video(run, video, tmp_path):
    path = predict.main([
        "--config", run["config"], "--weights", run["weights"], "--input", video, "--output", str(tmp_path),
        "--score-threshold", "0.3",
    ])
    entries = read_detections(path)
    assert {e["image_id"] for e in entries} == set(range(5))
    assert all(e["frame"] == e["image_id"] and e["file_name"] == "clip.mp4" for e in entries)
    capture = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    frames = []
    ok, frame = capture.read()
    while ok:
        frames.append(frame)
        ok, frame = capture.read()
    capture.release()
    assert len(frames) == 5 and frames[0].shape == (96, 160, 3)


def test_predict_errors_name_the_problem(run, images, tmp_path):
    common = ["--config", run["config"], "--weights", run["weights"], "--output", str(tmp_path / "out")]
    missing = str(tmp_path / "nowhere.png")
    with pytest.raises(SystemExit, match="nowhere.png.*does not exist"):
        predict.main(common + ["--input", missing])
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    with pytest.raises(SystemExit, match="cannot read image.*broken.png"):
        predict.main(common + ["--input", str(bad)])
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_text("not a video")
    with pytest.raises(SystemExit, match="cannot read video.*broken.mp4"):
        predict.main(common + ["--input", str(bad_video)])
    with pytest.raises(SystemExit, match=r"--classes \['fire'\] unknown.*car"):
        predict.main(common + ["--input", str(images), "--classes", "fire"])
    with pytest.raises(SystemExit, match="does not fit the model"):
        predict.main(common + ["--input", str(images), "MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    student_only = tmp_path / "student_only.pth"
    torch.save({"model": torch.load(run["weights"])["model"]}, student_only)
    with pytest.raises(SystemExit, match="holds no teacher"):
        predict.main(["--config", run["config"], "--weights", str(student_only), "--output", str(tmp_path / "out"),
                      "--input", str(images), "--which", "teacher"])


def test_visualize_batch_writes_a_grid_per_target_image(run, tmp_path):
    written = visualize.main([
        "batch", "--config", run["config"], "--weights", run["weights"], "--output", str(tmp_path), "--num-images", "2",
        "--score-threshold", "0.3",
    ])
    assert len(written) == 2
    for p in written:
        image = cv2.imread(p)
        assert image is not None and image.shape[1] >= 1000 and image.shape[0] >= 400  # 3 x 2 panels
        assert image.std() > 20


def test_visualize_curves(tmp_path, monkeypatch):
    lines = []
    for it in range(19, 400, 20):
        r = {"iteration": it, "loss_cls": 1.0 / (1 + it / 100), "loss_rpn_cls": 0.3, "loss_sada_img": 0.69, "lr": 0.01,
             "sada/img_acc": 0.5 + 20 / (it + 40), "sada/ins_acc": 0.55}
        if it >= 200:
            r.update({"loss_mic_cls": 0.4, "mic/pseudo_boxes_per_image": 2.0 + it / 200,
                      "mic/pseudo_box_confidence": 0.8 + it / 4000, "mic/pseudo_box_area": it / 800,
                      "mic/pseudo_large_box_fraction": it / 400, "mic/pseudo_class_fraction/0": 0.25,
                      "mic/pseudo_class_fraction/1": 0.75})
        lines.append(json.dumps(r))
    lines.append(json.dumps({"iteration": 199, "burn_in/ds_val/bbox/AP50": 30.0}))
    for it in (299, 399):
        lines.append(json.dumps({"iteration": it, "teacher/ds_val/bbox/AP50": 35.0 + it / 100,
                                 "student/ds_val/bbox/AP50": 33.0, "student/ds_val/bbox/AP50-car": float("nan")}))
    (tmp_path / "metrics.json").write_text("\n".join(lines) + '\n{"iteration": 4')  # a run still writing
    panels = {}
    draw = visualize.plot_lines

    def spy(ax, records, lines, title, *args):
        panels[title] = [key for key, *_ in lines if visualize.series(records, key)[0]]
        labels[title] = [label for key, label, _ in lines if visualize.series(records, key)[0]]
        return draw(ax, records, lines, title, *args)

    labels = {}
    monkeypatch.setattr(visualize, "plot_lines", spy)
    out = visualize.main(["curves", "--output-dir", str(tmp_path), "--out", str(tmp_path / "plots" / "curves.png")])
    # confirmation bias is read from confidence and size over time, drawn next to the count
    drift = next(k for k in panels if k.startswith("teacher pseudo-labels: confidence"))
    assert panels[drift] == ["mic/pseudo_box_confidence", "mic/pseudo_box_area", "mic/pseudo_large_box_fraction",
                             "mic/pseudo_class_fraction/0", "mic/pseudo_class_fraction/1"]
    assert labels[drift][3:] == ["class 0 share", "class 1 share"]  # no config.yaml in the run's directory
    # with the run's config.yaml (as training writes it), the class mix is named
    from mic_det.config import load_config
    cfg = load_config("configs/bench/synthetic_source_only.yaml", [])
    (tmp_path / "config.yaml").write_text(cfg.dump())
    visualize.main(["curves", "--output-dir", str(tmp_path), "--out", str(tmp_path / "plots" / "curves.png")])
    assert labels[drift][3:] == ["car share", "person share"]
    assert panels["teacher pseudo-labels: how many"] == ["mic/pseudo_boxes_per_image"]
    image = cv2.imread(out)
    assert image is not None and image.shape[0] >= 600 and image.shape[1] >= 1000 and image.std() > 10
    with pytest.raises(SystemExit, match="metrics.json"):
        visualize.main(["curves", "--output-dir", str(tmp_path / "nothing")])


def test_reference_speed_config_differs_from_cs2foggy_mic_only_where_it_says():
    """configs/bench/speed_reference.yaml stands in for the Cityscapes run when timing a
    GPU: it must keep the model, input size, batch and MIC settings of cs2foggy_mic.yaml
    and change only what its comment lists."""
    from mic_det.config import load_config

    ref, speed = (load_config(os.path.join(REPO, p), []) for p in
                  ("configs/cs2foggy_mic.yaml", "configs/bench/speed_reference.yaml"))
    changed = {
        "MODEL.WEIGHTS": "", "MODEL.RESNETS.NORM": "BN", "MODEL.ROI_HEADS.NUM_CLASSES": 3,
        "DATASETS.TRAIN": ("synthetic_clear_train",), "DATASETS.TRAIN_TARGET": ("synthetic_foggy_train",),
        "DATASETS.TEST": ("synthetic_foggy_val",), "MIC.PSEUDO_LABEL_THRESHOLD": 0.0,
        "OUTPUT_DIR": "output/speed_reference",
    }
    for key, value in changed.items():
        node, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        target = ref
        for part in filter(None, node.split(".")):
            target = target[part]
        assert target[leaf] != value, key  # really a change
        target[leaf] = value
    assert ref.dump() == speed.dump()
    assert (speed.INPUT.MIN_SIZE_TRAIN, speed.INPUT.MAX_SIZE_TRAIN) == ((800,), 1600)
    assert (speed.SOLVER.IMS_PER_BATCH, speed.SOLVER.IMS_PER_BATCH_TARGET) == (1, 1)
