"""The accuracy benchmark (tools/benchmark.py accuracy): the summary arithmetic on
hand-made results, reuse of finished runs, the commands of a dry run, and one real tiny
run of two methods that writes the table and the chart."""
import argparse
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from mic_det.benchmark import accuracy, files, plan, report, shifts

BENCHMARK = os.path.join(REPO, "tools", "benchmark.py")

# conftest.tiny_cfg as overrides of the demo model
TINY = [
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
    "MODEL.SADA.IMG_HIDDEN_DIM", "16", "MODEL.SADA.INS_HIDDEN_DIM", "32", "MODEL.SADA.INS_PROPOSALS_PER_IMAGE", "32",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "192", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "192",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.IMS_PER_BATCH_TARGET", "2", "DATALOADER.NUM_WORKERS", "0",
    "TEST.DETECTIONS_PER_IMAGE", "20",
]


def record(method, seed, ap50, shift="synthetic", ds="synthetic_foggy_val"):
    return {"shift": shift, "method": method, "seed": seed, "datasets": {ds: {"AP50": ap50, "AP": ap50 / 2}}}


def test_summary_mean_std_and_gap_closed():
    records = [record("source_only", s, v) for s, v in zip((0, 1, 2), (10.0, 12.0, 14.0))]
    records += [record("mic", s, v) for s, v in zip((0, 1, 2), (20.0, 22.0, 24.0))]
    records += [record("sada", s, v) for s, v in zip((0, 2), (11.0, 13.0))]  # seed 1 missing
    records += [record("oracle", s, v) for s, v in zip((0, 1, 2), (30.0, 32.0, 34.0))]
    cells = report.summarize(records)["synthetic"]["synthetic_foggy_val"]
    assert cells["source_only"]["mean"] == pytest.approx(12.0)
    assert cells["source_only"]["std"] == pytest.approx(2.0)  # sample std (n - 1)
    assert cells["mic"]["gap_closed"] == pytest.approx((22 - 12) / (32 - 12))
    assert cells["sada"]["n"] == 2 and cells["sada"]["gap_closed"] == pytest.approx(0.0)
    assert cells["source_only"]["gap_closed"] == 0.0 and cells["oracle"]["gap_closed"] == 1.0

    table = report.format_table(cells, seeds=[0, 1, 2])
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert list(rows) == ["source only", "SADA", "MIC (SADA + MIC), teacher", "oracle (target labels)"]
    assert "22.0 ± 2.0 (3)" in rows["MIC (SADA + MIC), teacher"]
    assert "20.0 / 22.0 / 24.0" in rows["MIC (SADA + MIC), teacher"] and "| 50 % |" in rows["MIC (SADA + MIC), teacher"]
    assert "11.0 / – / 13.0" in rows["SADA"]


def test_gap_closed_is_na_without_a_gap():
    assert report.gap_closed(20.0, 30.0, 30.0) is None  # oracle == source only
    assert report.gap_closed(20.0, 30.0, 25.0) is None  # oracle below source only
    assert report.gap_closed(None, 10.0, 20.0) is None
    records = [record("source_only", 0, 30.0), record("mic", 0, 31.0), record("oracle", 0, 29.0)]
    cells = report.summarize(records)["synthetic"]["synthetic_foggy_val"]
    assert all(c["gap_closed"] is None for c in cells.values())
    table = report.format_table(cells, seeds=[0])
    assert all(line.endswith("| n/a |") for line in table.splitlines()[2:])
    assert "31.0 (n=1)" in table  # one seed: no std
    assert report.mean_std([1.0]) == (1.0, None) and report.mean_std([]) == (None, None)


def test_gap_note_warns_when_the_gap_is_noise():
    def cells(so, oracle):
        recs = [record("source_only", i, v) for i, v in enumerate(so)] + [record("oracle", i, v) for i, v in enumerate(oracle)]
        return report.summarize(recs)["synthetic"]["synthetic_foggy_val"]

    clear = report.gap_note(cells([80.0, 82.0], [95.0, 96.0]))  # gap 14.5, spreads 1.4 / 0.7
    assert clear.startswith("Gap (oracle − source only): +14.5 AP50") and "noise" not in clear
    assert "within twice the seed spread" in report.gap_note(cells([74.0, 78.0], [76.0, 79.0]))  # gap 1.5, spread 2.8
    assert "No gap" in report.gap_note(cells([76.0, 72.0], [73.0]))  # oracle below source only
    assert report.gap_note(cells([76.0], [])) is None  # no oracle: nothing to compare


def parse(argv):
    parser = argparse.ArgumentParser()
    accuracy.add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def write_results(run, ap50, spec=True):
    os.makedirs(run.output_dir, exist_ok=True)
    ds = "synthetic_foggy_val"
    with open(os.path.join(run.output_dir, "results.json"), "w") as f:
        json.dump({ds: {"bbox": {"AP": ap50 / 2, "AP50": ap50}}}, f)
    if spec:
        with open(os.path.join(run.output_dir, files.SPEC_FILE), "w") as f:
            json.dump({"signature": run.signature, "seconds": 1.0}, f)


def test_existing_results_are_reused_and_stale_ones_redone(tmp_path):
    argv = ["--shifts", "synthetic", "--methods", "source_only,oracle", "--seeds", "0,1",
            "--iters", "8", "--output-dir", str(tmp_path)]
    runs = plan.build_plan(accuracy.resolve_paths(parse(argv)))
    # seed by seed, so an interrupted benchmark has every method at the same seeds
    assert [r.key for r in runs] == ["synthetic/source_only/seed0", "synthetic/oracle/seed0",
                                     "synthetic/source_only/seed1", "synthetic/oracle/seed1"]
    for run, ap50 in zip(runs, (10.0, 30.0, 14.0, 34.0)):
        write_results(run, ap50, spec=run.seed == 0)  # seed 1: results.json alone, also reused

    def no_training(command, log_path, env):
        raise AssertionError(f"should have been reused: {command}")

    assert accuracy.run_benchmark(parse(argv), launcher=no_training, log=lambda *a: None) == 0
    written = json.loads((tmp_path / "accuracy.json").read_text())
    assert all(r["reused"] for r in written["runs"])
    cells = written["summary"]["synthetic"]["synthetic_foggy_val"]
    assert cells["source_only"]["values"] == {"0": 10.0, "1": 14.0} and cells["oracle"]["mean"] == 32.0
    assert "| oracle (target labels) | 32.0 ± 2.8 (2) | 30.0 / 34.0 | 100 % |" in (tmp_path / "accuracy.md").read_text()
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # other settings (--iters 4): seed-0 runs, whose record says --iters 8, are redone;
    # a run interrupted after a checkpoint resumes
    calls = []

    def fake_training(command, log_path, env):
        calls.append(command)
        out = command[command.index("OUTPUT_DIR") + 1]
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump({"synthetic_foggy_val": {"bbox": {"AP": None, "AP50": None}}}, f)  # no detections
        return 0

    argv4 = [a if a != "8" else "4" for a in argv]
    runs4 = plan.build_plan(accuracy.resolve_paths(parse(argv4)))
    os.remove(os.path.join(runs4[3].output_dir, "results.json"))  # oracle seed1: interrupted ...
    with open(os.path.join(runs4[3].output_dir, files.SPEC_FILE), "w") as f:
        json.dump({"signature": runs4[3].signature, "seconds": 5.0}, f)
    open(os.path.join(runs4[3].output_dir, "last_checkpoint"), "w").write("model_0000001.pth")  # ... after a checkpoint
    assert accuracy.run_benchmark(parse(argv4), launcher=fake_training, log=lambda *a: None) == 0
    assert [c[c.index("OUTPUT_DIR") + 1] for c in calls] == [runs4[0].output_dir, runs4[1].output_dir, runs4[3].output_dir]
    assert "SOLVER.MAX_ITER" in calls[0] and calls[0][calls[0].index("SOLVER.MAX_ITER") + 1] == "4"
    assert "--resume" in calls[2] and "--resume" not in calls[0]
    written = json.loads((tmp_path / "accuracy.json").read_text())
    oracle0 = [r for r in written["runs"] if r["method"] == "oracle" and r["seed"] == 0][0]
    assert oracle0["datasets"]["synthetic_foggy_val"] == {"AP50": 0.0, "AP": 0.0, "no_detections": True}


def test_report_only_summarises_finished_runs_and_trains_nothing(tmp_path):
    argv = ["--shifts", "synthetic", "--methods", "source_only,mic,oracle", "--seeds", "0,1",
            "--iters", "8", "--output-dir", str(tmp_path)]
    runs = plan.build_plan(accuracy.resolve_paths(parse(argv)))
    done = {"synthetic/source_only/seed0": 10.0, "synthetic/oracle/seed0": 30.0, "synthetic/source_only/seed1": 14.0}
    for run in runs:
        if run.key in done:
            write_results(run, done[run.key])
    running = [r for r in runs if r.key == "synthetic/mic/seed1"][0]  # still training: spec, no results.json
    os.makedirs(running.output_dir)
    with open(os.path.join(running.output_dir, files.SPEC_FILE), "w") as f:
        json.dump({"signature": running.signature, "seconds": 1.0}, f)

    def no_training(command, log_path, env):
        raise AssertionError(f"--report-only must not train: {command}")

    logged = []
    assert accuracy.run_benchmark(parse(argv + ["--report-only"]), launcher=no_training, log=logged.append) == 0
    written = json.loads((tmp_path / "accuracy.json").read_text())
    assert sorted(r["method"] + str(r["seed"]) for r in written["runs"]) == ["oracle0", "source_only0", "source_only1"]
    assert written["settings"]["unfinished"] == ["synthetic/mic/seed0", "synthetic/mic/seed1", "synthetic/oracle/seed1"]
    assert "--report-only" not in written["settings"]["command"]  # the command that makes the runs
    md = (tmp_path / "accuracy.md").read_text()
    assert "| source only | 12.0 ± 2.8 (2) | 10.0 / 14.0 | 0 % |" in md
    assert "| oracle (target labels) | 30.0 (n=1) | 30.0 / – | 100 % |" in md
    assert "- synthetic/mic/seed1" in md.split("Not finished yet")[1]
    assert os.listdir(running.output_dir) == [files.SPEC_FILE]  # the running one untouched
    with pytest.raises(SystemExit, match="--report-only"):
        accuracy.run_benchmark(parse(argv + ["--report-only", "--force"]), launcher=no_training, log=logged.append)


def test_runs_record_their_environment_and_saved_records_read_back(tmp_path):
    out, saved = tmp_path / "out", tmp_path / "records"
    argv = ["--shifts", "synthetic", "--methods", "source_only,oracle", "--seeds", "0",
            "--iters", "8", "--output-dir", str(out)]

    def fake_training(command, log_path, env):
        run_dir = command[command.index("OUTPUT_DIR") + 1]
        open(os.path.join(run_dir, "model_final.pth"), "w").write("weights")
        ap50 = 20.0 if "oracle" in run_dir else 10.0
        with open(os.path.join(run_dir, "results.json"), "w") as f:
            json.dump({"synthetic_foggy_val": {"bbox": {"AP": ap50 / 2, "AP50": ap50}}}, f)
        return 0

    assert accuracy.run_benchmark(parse(argv + ["--save-records", str(saved)]), launcher=fake_training,
                                  log=lambda *a: None) == 0
    spec = json.loads((out / "synthetic" / "oracle" / "seed0" / files.SPEC_FILE).read_text())
    [env] = spec["environments"]
    import torch

    assert env["torch"] == torch.__version__ and env["cpu"] and "pillow" in env
    # the record: results and spec of each run, no weights, plus the report
    assert sorted(p.name for p in (saved / "synthetic" / "oracle" / "seed0").iterdir()) == [files.SPEC_FILE, "results.json"]
    assert (saved / "accuracy.md").is_file()

    # read back on its own: the same table, nothing trained
    def no_training(command, log_path, env):
        raise AssertionError(f"the saved records must be reused: {command}")

    argv_saved = [a if a != str(out) else str(saved) for a in argv]
    assert accuracy.run_benchmark(parse(argv_saved + ["--report-only"]), launcher=no_training, log=lambda *a: None) == 0
    table = (saved / "accuracy.md").read_text()
    assert "| source only | 10.0 (n=1) |" in table and "| oracle (target labels) | 20.0 (n=1) |" in table
    assert "different environments" not in table

    # a run made elsewhere: the report says the table mixes environments
    other = saved / "synthetic" / "source_only" / "seed0" / files.SPEC_FILE
    spec = json.loads(other.read_text())
    spec["environments"][0]["cpu"] = "another CPU"
    other.write_text(json.dumps(spec))
    assert accuracy.run_benchmark(parse(argv_saved + ["--report-only"]), launcher=no_training, log=lambda *a: None) == 0
    assert "made in 2 different environments" in (saved / "accuracy.md").read_text()


def test_editing_a_config_makes_its_finished_runs_stale(tmp_path, monkeypatch):
    config = tmp_path / "edited.yaml"
    config.write_text(f"_BASE_: {os.path.join(REPO, 'configs', 'bench', 'synthetic_source_only.yaml')}\n")
    monkeypatch.setitem(shifts.SHIFTS["synthetic"].configs, "source_only", str(config))
    argv = ["--shifts", "synthetic", "--methods", "source_only", "--seeds", "0", "--output-dir", str(tmp_path / "out")]
    run, = plan.build_plan(accuracy.resolve_paths(parse(argv)))
    write_results(run, 10.0)
    assert plan.run_state(run) == "reuse"
    # a change in the file, or in a _BASE_ it inherits from, changes the merged config
    config.write_text(config.read_text() + "SOLVER:\n  BASE_LR: 0.01\n")
    run, = plan.build_plan(accuracy.resolve_paths(parse(argv)))
    assert plan.run_state(run) == "stale"


def test_settings_of_switched_off_methods_do_not_make_runs_stale():
    """A SADA or MIC setting cannot act on a source-only run: its digest ignores them,
    while a SADA run's digest sees them."""
    source_only = plan.read_config("configs/bench/synthetic_source_only.yaml")
    sada = plan.read_config("configs/bench/synthetic_sada.yaml")
    mic = plan.read_config("configs/bench/synthetic_mic.yaml")
    digests = [plan.config_digest(c) for c in (source_only, sada, mic)]
    for c in (source_only, sada, mic):
        c.MODEL.SADA.IMG_INIT_STD = 0.5
        c.MIC.MASK_RATIO = 0.7
        c.TEACHER.EMA_ALPHA = 0.5
    assert plan.config_digest(source_only) == digests[0]
    assert plan.config_digest(sada) != digests[1]
    assert plan.config_digest(mic) != digests[2]
    sada_only_init = plan.read_config("configs/bench/synthetic_sada.yaml")
    sada_only_init.MODEL.SADA.IMG_INIT_STD = 0.5
    assert plan.config_digest(sada) == plan.config_digest(sada_only_init), "MIC's settings count in a SADA run"
    source_only.SOLVER.BASE_LR = 0.5  # everything else does
    assert plan.config_digest(source_only) != digests[0]


def test_runs_start_from_the_repository_root():
    """The configs and tools/train_net.py of a run are named relative to plan.REPO."""
    assert os.path.samefile(plan.REPO, REPO)
    assert os.path.isfile(os.path.join(plan.REPO, plan.TRAIN_NET))
    assert os.path.isfile(os.path.join(plan.REPO, shifts.SHIFTS["synthetic"].config("mic")))


def _fake_cctv_set(root, label="0 0.5 0.5 0.2 0.2\n"):
    for split in ("train", "valid", "test"):
        os.makedirs(root / split / "images")
        os.makedirs(root / split / "labels")
        (root / split / "images" / "a.jpg").write_bytes(b"\xff\xd8" + b"0" * 100)
        (root / split / "labels" / "a.txt").write_text(label)
    return root


def test_cctv_runs_are_recognised_wherever_the_set_lies(tmp_path):
    """Committed run records are reused on another machine, where the CCTV set sits under
    another path; a set with other content makes them stale; without the set (report only)
    they are taken as recorded."""
    def planned(root):
        argv = ["--shifts", "cctv_fog", "--methods", "oracle", "--seeds", "0", "--output-dir", str(tmp_path / "out"),
                "--cctv-root", str(root)]
        run, = plan.build_plan(accuracy.resolve_paths(parse(argv)))
        return run

    write_results(planned(_fake_cctv_set(tmp_path / "here")), 70.0)
    assert plan.run_state(planned(_fake_cctv_set(tmp_path / "elsewhere"))) == "reuse"
    assert plan.run_state(planned(_fake_cctv_set(tmp_path / "relabelled", label="1 0.5 0.5 0.2 0.25\n"))) == "stale"
    assert plan.run_state(planned(tmp_path / "absent")) == "reuse"


def test_dry_run_lists_the_commands(tmp_path, tool_env):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, BENCHMARK, "accuracy", "--dry-run", "--seeds", "0,1", "--iters", "8", "--output-dir", str(out)],
        cwd=REPO, env=tool_env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [line for line in proc.stdout.splitlines() if "tools/train_net.py" in line]
    expected = [(shift, method, seed) for shift in ("synthetic", "synthetic_dusk", "cctv_fog") for seed in (0, 1)
                for method in ("source_only", "sada", "mic", "oracle")]
    assert len(commands) == len(expected)
    fog_root = os.path.join(tool_env["DETECTRON2_DATASETS"], "cctv_fire_smoke_fog")
    for line, (shift, method, seed) in zip(commands, expected):
        assert f"tools/train_net.py --config configs/bench/{shift}_{method}.yaml SOLVER.MAX_ITER 8 " in line
        assert f" SEED {seed} " in line and line.endswith(f"OUTPUT_DIR {out}/{shift}/{method}/seed{seed}")
        assert ("TEACHER.BURN_IN_ITERS 5" in line) == (method == "mic")  # 500/800 and 938/1500 of 8
        assert (f"DATASETS.CUSTOM.cctv_fog_train.ROOT {fog_root}" in line) == (shift == "cctv_fog")
    assert not out.exists()  # nothing run, nothing written


def test_tiny_benchmark_writes_table_and_chart(tmp_path, tool_env):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, BENCHMARK, "accuracy", "--shifts", "synthetic", "--methods", "source_only,oracle",
         "--seeds", "0", "--iters", "2", "--output-dir", str(out), *TINY],
        cwd=REPO, env=tool_env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for method in ("source_only", "oracle"):
        assert (out / "synthetic" / method / "seed0" / "results.json").is_file()
        assert not (out / "synthetic" / method / "seed0" / "model_0000000.pth").exists()
    written = json.loads((out / "accuracy.json").read_text())
    assert [(r["method"], r["seed"]) for r in written["runs"]] == [("source_only", 0), ("oracle", 0)]
    assert all(isinstance(r["datasets"]["synthetic_foggy_val"]["AP50"], float) for r in written["runs"])
    table = (out / "accuracy.md").read_text()
    assert "| source only |" in table and "| oracle (target labels) |" in table and "| SADA |" not in table
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| method | AP50 mean ± std (n) |" in proc.stdout  # the table is printed at the end


def test_mixed_precision_method_compared_seed_by_seed():
    records = [record("mic", s, v) for s, v in zip((0, 1, 2), (90.0, 92.0, 94.0))]
    records += [record("mic_amp", s, v) for s, v in zip((0, 2), (91.0, 93.0))]  # seed 1 missing
    for r in records:
        r["student"] = {"synthetic_foggy_val": {"AP50": r["datasets"]["synthetic_foggy_val"]["AP50"] - 1}}
    records += [record("source_only", 0, 80.0), record("oracle", 0, 100.0)]
    cells = report.summarize(records)["synthetic"]["synthetic_foggy_val"]
    table = report.format_table(cells, seeds=[0, 1, 2])
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]]
    assert rows == ["source only", "MIC (SADA + MIC), teacher", "MIC, mixed precision (bf16), teacher",
                    "oracle (target labels)"]
    # differences over the seeds both have (0: +1, 2: -1), judged against fp32's spread there
    line = report.amp_comparison(cells)
    assert "seeds 0, 2" in line and "difference +0.0 ± 1.4" in line and "+1.0 / -1.0" in line
    assert "fp32 runs: 2.8." in line
    assert report.amp_comparison({"mic": cells["mic"]}) is None
    md = report.format_markdown(report.summarize(records), records, {
        "seeds": [0, 1, 2], "command": "x", "iters": {"synthetic": 8}})
    assert "MIC student (not the reported model): AP50 91.0 ± 2.0 (3)." in md
    assert "MIC, mixed precision (bf16), student (not the reported model): AP50 91.0 ± 1.4 (2)." in md
    assert line in md


def test_mixed_precision_config_differs_from_mic_only_in_amp(tmp_path):
    fp32 = plan.read_config("configs/bench/synthetic_mic.yaml")
    amp = plan.read_config("configs/bench/synthetic_mic_amp.yaml")
    assert not fp32.SOLVER.AMP.ENABLED and amp.SOLVER.AMP.ENABLED
    assert amp.SOLVER.AMP.PRECISION == "bfloat16"
    fp32.SOLVER.AMP.ENABLED, fp32.OUTPUT_DIR = True, amp.OUTPUT_DIR
    assert fp32.dump() == amp.dump()

    # asked on both shifts: planned where a config exists, said to be left out elsewhere
    lines = []
    args = parse(["--shifts", "synthetic,cctv_fog", "--methods", "mic_amp", "--seeds", "0",
                  "--dry-run", "--output-dir", str(tmp_path)])
    assert accuracy.run_benchmark(args, log=lines.append) == 0
    commands = [line for line in lines if "tools/train_net.py" in line]
    assert len(commands) == 1 and "--config configs/bench/synthetic_mic_amp.yaml" in commands[0]
    assert "# cctv_fog/mic_amp: no config for this method on this shift, left out" in lines
    with pytest.raises(SystemExit, match="nothing to run"):
        accuracy.run_benchmark(parse(["--shifts", "cctv_fog", "--methods", "mic_amp", "--dry-run",
                                      "--output-dir", str(tmp_path)]), log=lines.append)


def test_mrt_methods_differ_from_mic_only_in_their_options_and_leave_other_digests_alone():
    """Each MRT method is synthetic_mic.yaml (or its dusk twin) plus its own MRT keys;
    MRT's section, while all its options are off, does not enter a run's digest (so the
    runs made before MRT existed stay current), and --iters scales the reset period."""
    options = {"dt": ["DYNAMIC_THRESHOLD"], "sr": ["SELECTIVE_RETRAINING"], "mr": ["MASKED_RECONSTRUCTION"],
               "mrt": ["DYNAMIC_THRESHOLD", "SELECTIVE_RETRAINING", "MASKED_RECONSTRUCTION"]}
    for shift in ("synthetic", "synthetic_dusk"):
        for suffix, keys in options.items():
            mic = plan.read_config(f"configs/bench/{shift}_mic.yaml")
            cfg = plan.read_config(f"configs/bench/{shift}_mic_{suffix}.yaml")
            assert [k for k in cfg.MRT if cfg.MRT[k].ENABLED] == keys
            for k in keys:
                mic.MRT[k] = cfg.MRT[k].clone()
            mic.OUTPUT_DIR = cfg.OUTPUT_DIR
            assert mic.dump() == cfg.dump(), (shift, suffix)
            assert f"mic_{suffix}" in shifts.SHIFTS[shift].methods
    mic = plan.read_config("configs/bench/synthetic_mic.yaml")
    before = plan.config_digest(mic)
    mic.MRT.SELECTIVE_RETRAINING.PERIOD = 7  # an option that is off cannot act
    assert plan.config_digest(mic) == before
    mic.MRT.SELECTIVE_RETRAINING.ENABLED = True
    assert plan.config_digest(mic) != before
    sr = plan.read_config("configs/bench/synthetic_mic_sr.yaml")
    opts = plan.schedule_overrides(sr, 80)
    assert opts[opts.index("MRT.SELECTIVE_RETRAINING.PERIOD") + 1] == "10"  # 100 of 800 -> 10 of 80
    assert "MRT.SELECTIVE_RETRAINING.PERIOD" not in plan.schedule_overrides(plan.read_config("configs/bench/synthetic_mic.yaml"), 80)


def test_lever_methods_change_one_setting_of_mic():
    """mic_thr06 and mic_bi300 are the shift's MIC config with one key changed (so a
    difference in their rows is that key's doing), on both synthetic shifts and no other."""
    levers = {"thr06": ("MIC", "PSEUDO_LABEL_THRESHOLD", 0.6), "bi300": ("TEACHER", "BURN_IN_ITERS", 300)}
    for shift in ("synthetic", "synthetic_dusk"):
        for suffix, (section, key, value) in levers.items():
            mic = plan.read_config(f"configs/bench/{shift}_mic.yaml")
            cfg = plan.read_config(f"configs/bench/{shift}_mic_{suffix}.yaml")
            assert cfg[section][key] == value != mic[section][key]
            mic[section][key] = value
            mic.OUTPUT_DIR = cfg.OUTPUT_DIR
            assert mic.dump() == cfg.dump(), (shift, suffix)
            assert f"mic_{suffix}" in shifts.SHIFTS[shift].methods and f"mic_{suffix}" in shifts.MIC_METHODS
    assert not set(shifts.LEVER_METHODS) & set(shifts.SHIFTS["cctv_fog"].methods)
    burn_in = plan.schedule_overrides(plan.read_config("configs/bench/synthetic_mic_bi300.yaml"), 80)
    assert burn_in[burn_in.index("TEACHER.BURN_IN_ITERS") + 1] == "30"  # --iters keeps the proportion


def test_dusk_runs_made_on_an_earlier_dusk_style_are_redone(tmp_path):
    """The dusk target's pixels are not in any config: its runs record the dusk style they
    were trained and tested on, and one made on another style is stale. The other shifts'
    signatures (and so their committed records) carry no such entry."""
    from mic_det.datagen.synthetic_shift import DUSK_VERSION

    argv = ["--shifts", "synthetic,synthetic_dusk", "--methods", "source_only", "--seeds", "0",
            "--output-dir", str(tmp_path)]
    synthetic, dusk = plan.build_plan(accuracy.resolve_paths(parse(argv)))
    assert dusk.signature["data"] == {"dusk_version": DUSK_VERSION} and "data" not in synthetic.signature
    write_results(dusk, 40.0)
    assert plan.run_state(dusk) == "reuse"
    old = dict(dusk.signature, data={"dusk_version": DUSK_VERSION - 1})
    with open(os.path.join(dusk.output_dir, files.SPEC_FILE), "w") as f:
        json.dump({"signature": old, "seconds": 1.0}, f)
    assert plan.run_state(dusk) == "stale"
