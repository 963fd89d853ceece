"""tools/train_net.py as a user runs it: train, results.json, --eval-only, bad configs,
and two processes through detectron2's launch (GLOO on CPU)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    e = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    # the default synthetic set, generated once for this module (a few seconds)
    subprocess.run([sys.executable, "-m", "mic_det.data.synthetic", "--root", str(root), "--num-train", "600"], env=e, check=True, capture_output=True)
    return e


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    cfg = tiny_cfg(sada=True, mic=True)
    cfg.DATASETS.TRAIN = ("synthetic_clear_train",)
    cfg.DATASETS.TRAIN_TARGET = ("synthetic_foggy_train",)
    cfg.DATASETS.TEST = ("synthetic_foggy_val",)
    cfg.MIC.PSEUDO_LABEL_THRESHOLD = 0.0
    cfg.TEST.EVAL_MODEL = "both"
    cfg.SOLVER.MAX_ITER = 3
    cfg.SOLVER.BASE_LR = 0.001
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    path = tmp_path_factory.mktemp("cfg") / "tiny_mic.yaml"
    path.write_text(cfg.dump())
    return str(path)


def run(args, env, **kw):
    return subprocess.run([sys.executable, TRAIN_NET, *args], env=env, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def trained(env, config_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    p = run(["--config", config_file, "OUTPUT_DIR", str(out)], env)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_train_writes_results_for_teacher_and_student(trained):
    results = json.loads((trained / "results.json").read_text())
    assert set(results) == {"teacher/synthetic_foggy_val", "student/synthetic_foggy_val"}
    bbox = results["student/synthetic_foggy_val"]["bbox"]
    for key in ("AP", "AP50", "AP75", "AP50-car", "AP50-person", "AP50-bus"):
        assert key in bbox
    for name in ("log.txt", "metrics.json", "last_checkpoint", "model_final.pth", "config.yaml"):
        assert (trained / name).exists(), name


def test_eval_only_reproduces_the_final_results(trained, env, config_file, tmp_path):
    p = run(
        ["--config-file", config_file, "--eval-only", "MODEL.WEIGHTS", str(trained / "model_final.pth"), "OUTPUT_DIR", str(tmp_path)],
        env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    again = json.loads((tmp_path / "results.json").read_text())
    first = json.loads((trained / "results.json").read_text())
    for key in first:
        assert again[key]["bbox"]["AP50"] == pytest.approx(first[key]["bbox"]["AP50"], abs=1e-6), key


def test_unknown_config_key_names_file_and_key(env, tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("MIC:\n  MASK_RATO: 0.5\n")
    p = run(["--config", str(bad)], env)
    assert p.returncode != 0
    assert "MIC.MASK_RATO" in p.stderr and "typo.yaml" in p.stderr
    assert "Traceback" not in p.stderr


def test_missing_config_file(env):
    p = run(["--config", "configs/does_not_exist.yaml"], env)
    assert p.returncode != 0 and "does_not_exist.yaml" in p.stderr


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".yaml")))
def test_every_shipped_config_loads(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_net", TRAIN_NET)
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    cfg = train_net.load_config(os.path.join(REPO, "configs", name), [])
    assert cfg.MODEL.META_ARCHITECTURE == "DomainAdaptiveRCNN"


def test_two_processes_train_and_write_results_once(env, config_file, tmp_path):
    p = run(["--config", config_file, "--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.IMS_PER_BATCH_TARGET", "2", "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(tmp_path)], env)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert "teacher/synthetic_foggy_val" in results
    assert (tmp_path / "model_final.pth").exists()
