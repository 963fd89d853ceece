"""tools/train_net.py as a user runs it: train, results.json, --eval-only, bad configs,
and two processes through detectron2's launch (GLOO on CPU)."""
import json
import os
import pytest

from conftest import CCTV, CCTV_SKIP_REASON, REPO, run_train_net as run
from mic_det.config import load_config


@pytest.fixture(scope="module")
def trained(tool_env, tiny_mic_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    p = run(["--config", tiny_mic_config, "OUTPUT_DIR", str(out)], tool_env)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_train_writes_results_for_teacher_and_student(trained):
    results = json.loads((trained / "results.json").read_text())
    assert set(results) == {"teacher/synthetic_foggy_val", "student/synthetic_foggy_val"}
    bbox = results["student/synthetic_foggy_val"]["bbox"]
    for key in ("AP", "AP50", "AP75", "AP50-car", "AP50-person", "AP50-bus"):
        assert key in bbox
    # precision and recall of the detections at the run's pseudo-label threshold
    thr = load_config(str(trained / "config.yaml"), []).MIC.PSEUDO_LABEL_THRESHOLD
    assert {f"precision50@{thr:g}", f"recall50@{thr:g}"} <= set(bbox)
    for name in ("log.txt", "metrics.json", "last_checkpoint", "model_final.pth", "config.yaml"):
        assert (trained / name).exists(), name


def test_eval_only_reproduces_the_final_results(trained, tool_env, tiny_mic_config, tmp_path):
    p = run(
        ["--config-file", tiny_mic_config, "--eval-only", "MODEL.WEIGHTS", str(trained / "model_final.pth"), "OUTPUT_DIR", str(tmp_path)],
        tool_env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    again = json.loads((tmp_path / "results.json").read_text())
    first = json.loads((trained / "results.json").read_text())
    for key in first:
        assert again[key]["bbox"]["AP50"] == pytest.approx(first[key]["bbox"]["AP50"], abs=1e-6), key


def test_unknown_config_key_names_file_and_key(tool_env, tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("MIC:\n  MASK_RATO: 0.5\n")
    p = run(["--config", str(bad)], tool_env)
    assert p.returncode != 0
    assert "MIC.MASK_RATO" in p.stderr and "typo.yaml" in p.stderr
    assert "Traceback" not in p.stderr


def test_missing_config_file(tool_env):
    p = run(["--config", "configs/does_not_exist.yaml"], tool_env)
    assert p.returncode != 0 and "does_not_exist.yaml" in p.stderr


SHIPPED_CONFIGS = sorted(
    os.path.relpath(os.path.join(d, f), os.path.join(REPO, "configs"))
    for d, _, files in os.walk(os.path.join(REPO, "configs"))
    for f in files
    if f.endswith(".yaml")
)


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_every_shipped_config_loads(name, monkeypatch):
    path = os.path.join(REPO, "configs", name)
    if name.startswith("smoke_fire") or "cctv" in name.lower():
        if not os.path.isdir(CCTV):
            pytest.skip(CCTV_SKIP_REASON)
    fog = os.path.join(REPO, "datasets", "cctv_fire_smoke_fog")
    if "cctv" in name.lower() and name.startswith("bench") and not os.path.isdir(fog):
        pytest.skip(f"{fog} (the fogged copy `tools/benchmark.py accuracy` writes first) is absent")
    monkeypatch.chdir(REPO)  # dataset paths in the configs are relative to the repository
    cfg = load_config(path, [])
    assert cfg.MODEL.META_ARCHITECTURE == "DomainAdaptiveRCNN"


def test_two_processes_train_and_write_results_once(tool_env, tiny_mic_config, tmp_path):
    p = run(["--config", tiny_mic_config, "--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.IMS_PER_BATCH_TARGET", "2", "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(tmp_path)], tool_env)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert "teacher/synthetic_foggy_val" in results
    assert (tmp_path / "model_final.pth").exists()


def test_speed_benchmark_reports_every_mode(tool_env, tiny_mic_config, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "speed.json"
    p = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "benchmark.py"), "speed", "--config", tiny_mic_config,
         "--iters", "2", "--warmup", "1", "--modes", "source_only,sada,mic,mic_amp", "--out", str(out),
         "OUTPUT_DIR", str(tmp_path)],
        env=tool_env, capture_output=True, text=True, timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    modes = report["modes"]
    assert set(modes) == {"source_only", "sada", "mic", "mic_amp"}
    assert modes["mic"]["amp"] is None and modes["mic_amp"]["amp"] == "bfloat16"
    assert modes["mic_amp"]["ratio_to_mic"] == pytest.approx(
        modes["mic_amp"]["sec_per_iter_median"] / modes["mic"]["sec_per_iter_median"])
    assert modes["source_only"]["ratio_to_source_only"] == 1.0
    assert modes["mic"]["ratio_to_sada"] == pytest.approx(
        modes["mic"]["sec_per_iter_median"] / modes["sada"]["sec_per_iter_median"]
    )
    assert modes["mic"]["pseudo_boxes_per_image"] > 0  # the masked pass really ran
    for m in modes.values():  # the wait for data is part of the step
        assert 0 <= m["data_wait_sec_median"] <= m["sec_per_iter_median"]


def test_demo_trains_then_prints_its_table(tool_env, tmp_path):
    """tools/demo.py (`make demo`) on its own config, shortened: burn-in, MIC, and the
    table of the burn-in student and the teacher on both test sets."""
    import subprocess
    import sys

    out = tmp_path / "demo"
    small = ["SOLVER.MAX_ITER", "3", "TEACHER.BURN_IN_ITERS", "1", "SOLVER.STEPS", "(2,)", "SOLVER.WARMUP_ITERS", "0",
             "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "64",
             "INPUT.MAX_SIZE_TEST", "128", "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "OUTPUT_DIR", str(out)]
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", "demo.py"), *small], cwd=REPO, env=tool_env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "3 iterations, 1 of them burn-in" in p.stdout
    # three steps of training: a model without detections has no AP (its row is left out)
    for row in ("| before MIC (student after burn-in: source + SADA) |", "| MIC teacher (EMA) |"):
        assert row in p.stdout, p.stdout[-2000:]
    assert "| model | synthetic_foggy_val AP50 | synthetic_clear_val AP50 |" in p.stdout
    assert (out / "results.json").is_file() and (out / "model_final.pth").is_file()
