"""tools/gpu_check.sh, the prepared GPU measurement, runs end to end at a toy size on
CPU: the dependency check, the data, all four modes, the JSON and its summary. (On the
GPU machine it also installs wheelhouse/; here everything is importable already.)"""
import json
import os
import subprocess
import sys

from conftest import REPO


def test_gpu_check_runs_every_mode_and_writes_its_json(tmp_path, tool_env):
    env = dict(tool_env, OUT=str(tmp_path), PY=sys.executable)
    p = subprocess.run(["bash", os.path.join(REPO, "tools", "gpu_check.sh"), "--tiny"], env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    report = json.loads((tmp_path / "speed_reference.json").read_text())
    assert report["config"] == "configs/bench/speed_reference.yaml"
    assert set(report["modes"]) == {"source_only", "sada", "mic", "mic_amp"}
    for name, m in report["modes"].items():
        assert m["sec_per_iter_median"] > 0, name
    assert report["modes"]["mic_amp"]["amp"] == "bfloat16" and report["modes"]["mic"]["amp"] is None
    assert "torch" in (tmp_path / "environment.txt").read_text()
    for name in report["modes"]:
        assert name in p.stdout  # the summary table
