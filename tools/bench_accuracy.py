"""Accuracy benchmark: how much of the source-only -> oracle gap each UDA method closes.

Run through ``tools/benchmark.py accuracy`` (documented in docs/benchmark.md)::

    python tools/benchmark.py accuracy [--shifts synthetic,cctv_fog] [--methods source_only,sada,mic,oracle]
        [--seeds 0,1,2] [--iters N] [--output-dir output/bench_accuracy] [--dry-run] [--force]
        [--cctv-root DIR] [--fog-beta 0.3] [--fog-horizon -0.5] [--report-only] [KEY VALUE ...]

Every (shift, method, seed) is one ordinary ``tools/train_net.py`` run of
``configs/bench/<shift>_<method>.yaml`` into ``OUTPUT_DIR/<shift>/<method>/seed<k>/``, a
subprocess whose ``results.json`` is read back. Trailing ``KEY VALUE`` pairs go to every
run (after the benchmark's own overrides). A run whose folder already holds a
``results.json`` made with the same settings is reused, so an interrupted benchmark
resumes; a run stopped half-way resumes from its last checkpoint; ``--force`` redoes all.
``--report-only`` trains nothing and reports the runs that have finished.

Outputs in OUTPUT_DIR: ``accuracy.json`` (every run, and the summary), ``accuracy.md``
(one table per shift and test set) and ``accuracy.png`` (bar chart, error bars = std).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join("tools", "train_net.py")  # run with cwd = REPO

METHODS = ("source_only", "sada", "mic", "oracle")  # the default set
# Opt-in: MIC with mixed precision (SOLVER.AMP.ENABLED, bf16), to check that AMP costs no
# accuracy beyond the seed spread. Only shifts that have configs/bench/<shift>_mic_amp.yaml.
ALL_METHODS = ("source_only", "sada", "mic", "mic_amp", "oracle")  # also the table order
MIC_METHODS = ("mic", "mic_amp")  # reported model: the EMA teacher
STUDENT_LABELS = {"mic": "MIC student", "mic_amp": "MIC, mixed precision (bf16), student"}
METHOD_LABELS = {
    "source_only": "source only",
    "sada": "SADA",
    "mic": "MIC (SADA + MIC), teacher",
    "mic_amp": "MIC, mixed precision (bf16), teacher",
    "oracle": "oracle (target labels)",
}
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_OUTPUT_DIR = os.path.join("output", "bench_accuracy")
SPEC_FILE = "bench_run.json"  # what the benchmark ran in a run folder, to decide on reuse
RESULTS_FILE = "results.json"
REPORT_JSON, REPORT_MD, REPORT_PNG = "accuracy.json", "accuracy.md", "accuracy.png"  # in --output-dir

# ---- the cctv_fog shift: fog settings -------------------------------------------------
CCTV_SPLITS = ("train", "valid", "test")
CCTV_DIRNAME = "cctv-fire-smoke"  # under the datasets root (datasets/README.md)
FOG_DIRNAME = "cctv_fire_smoke_fog"
FOG_STAMP = "FOG.json"
FOG_VERSION = 1
# Ground-plane prior with the horizon half an image height above the top row: distance
# 3 m at the bottom row, 9 m at the top row, so t = exp(-beta * d) runs from 0.41
# (bottom) to 0.07 (top) at beta 0.3: dense fog that thickens upward (where smoke usually
# is); flames stay visible. Beta 0.15 (t 0.64 to 0.26) cost a source-only model only 2-4
# AP50, no more than the seed spread, so it left no gap for adaptation to close.
# Atmospheric light: per-image dark-channel estimate (near white on these frames).
DEFAULT_FOG_BETA = 0.3
DEFAULT_FOG_HORIZON = -0.5


def _print(*args):
    print(*args, flush=True)


def default_cctv_root() -> str:
    """The CCTV fire/smoke set's documented place: <datasets root>/cctv-fire-smoke."""
    return os.path.join(datasets_root(), CCTV_DIRNAME)


def datasets_root() -> str:
    """$DETECTRON2_DATASETS (default ./datasets), absolute."""
    return os.path.abspath(os.environ.get("DETECTRON2_DATASETS", "datasets"))


# =======================================================================================
# Shifts and the run plan
# =======================================================================================
@dataclass
class Shift:
    name: str
    description: str
    train: str  # human-readable: what each method trains on
    methods: tuple = METHODS  # the methods this shift has configs for
    configs: Dict[str, str] = field(default_factory=dict)  # method -> config, relative to REPO

    def config(self, method: str) -> str:
        return self.configs.get(method) or os.path.join("configs", "bench", f"{self.name}_{method}.yaml")


SHIFTS = {
    "synthetic": Shift(
        "synthetic",
        "embedded synthetic street scenes, clear -> foggy (mic_det.datagen.synthetic_shift); "
        "demo model (Base-Demo-R18-FPN.yaml, 160x320 input)",
        "source: synthetic_clear_train (labelled); target: synthetic_foggy_train (unlabelled; "
        "labelled for the oracle); test: synthetic_foggy_val",
        methods=ALL_METHODS,
    ),
    "cctv_fog": Shift(
        "cctv_fog",
        "CCTV fire/smoke frames, clear -> fogged copies (mic_det.datagen.fog, ground-plane prior); "
        "CPU model of smoke_fire/cpu_example_finetune.yaml (R18-FPN, 320 px input)",
        "source: cctv-fire-smoke train (clear, labelled); target: the same frames fogged "
        "(unlabelled; labelled for the oracle); test: fogged test (headline) and valid",
    ),
}


@dataclass
class Run:
    shift: str
    method: str
    seed: int
    config: str  # relative to REPO
    opts: List[str]  # KEY VALUE overrides, OUTPUT_DIR included
    output_dir: str  # absolute
    signature: dict  # what must match for an existing results.json to be reused
    test_sets: List[str]  # DATASETS.TEST of the config: what results.json is read for
    iters: int  # SOLVER.MAX_ITER the run trains for

    @property
    def key(self) -> str:
        return f"{self.shift}/{self.method}/seed{self.seed}"

    def command(self, resume: bool = False) -> List[str]:
        return [sys.executable, TRAIN_NET, "--config", self.config, *(["--resume"] if resume else []), *self.opts]


def read_config(path: str):
    """The merged config of a YAML file (get_cfg + mic_det keys), without registering any
    dataset (so it works before the fogged data exists, e.g. for --dry-run)."""
    from detectron2.config import get_cfg

    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from mic_det import add_mic_config

    cfg = get_cfg()
    add_mic_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, path))
    return cfg


def scale_iters(value: int, iters: int, max_iter: int) -> int:
    return int(round(value * iters / max_iter))


def schedule_overrides(cfg, iters: Optional[int]) -> List[str]:
    """``--iters N``: SOLVER.MAX_ITER N, and every iteration count of the schedule scaled
    by N / MAX_ITER of the config, rounded: SOLVER.STEPS (those not in (0, N) dropped),
    SOLVER.WARMUP_ITERS and TEACHER.BURN_IN_ITERS (MIC keeps the same burn-in fraction,
    at least 1 iteration and at most N - 1). None: the config's schedule unchanged."""
    if iters is None:
        return []
    if iters < 1:
        raise ValueError(f"--iters must be >= 1, got {iters}")
    base = cfg.SOLVER.MAX_ITER
    steps = sorted({scale_iters(s, iters, base) for s in cfg.SOLVER.STEPS})
    steps = [s for s in steps if 0 < s < iters]
    opts = [
        "SOLVER.MAX_ITER", str(iters),
        "SOLVER.STEPS", "(" + "".join(f"{s}," for s in steps) + ")",
        "SOLVER.WARMUP_ITERS", str(scale_iters(cfg.SOLVER.WARMUP_ITERS, iters, base)),
    ]
    if cfg.MIC.ENABLED and cfg.TEACHER.BURN_IN_ITERS > 0:
        burn_in = min(max(scale_iters(cfg.TEACHER.BURN_IN_ITERS, iters, base), 1), max(iters - 1, 0))
        opts += ["TEACHER.BURN_IN_ITERS", str(burn_in)]
    return opts


def data_overrides(cfg, shift: str, cctv_root: str, fog_root: str) -> List[str]:
    """The dataset folders of ``shift``'s configs, where they differ from the YAML files'
    defaults (relative to the repository root: ``datasets/cctv-fire-smoke`` and
    ``datasets/cctv_fire_smoke_fog``), as absolute ROOT overrides."""
    if shift != "cctv_fog":
        return []
    opts = []
    for split in CCTV_SPLITS:
        for name, root in ((f"cctv_fire_smoke_{split}", cctv_root), (f"cctv_fog_{split}", fog_root)):
            default = os.path.join(REPO, cfg.DATASETS.CUSTOM[name].ROOT)
            if os.path.realpath(default) != os.path.realpath(root):
                opts += [f"DATASETS.CUSTOM.{name}.ROOT", root]
    return opts


RESERVED_KEYS = ("OUTPUT_DIR", "SEED")


def check_extra_opts(opts: Sequence[str]) -> None:
    if len(opts) % 2:
        raise SystemExit(f"error: trailing overrides must be KEY VALUE pairs, got {list(opts)}")
    for key in opts[::2]:
        if key in RESERVED_KEYS:
            raise SystemExit(f"error: {key} is set by the benchmark (use --output-dir / --seeds)")


def skipped_pairs(args) -> List[str]:
    """``shift/method`` pairs asked for that the shift has no config for (e.g. mic_amp on
    cctv_fog): left out of the plan, and said so."""
    return [f"{s}/{m}" for s in args.shifts for m in args.methods if m not in SHIFTS[s].methods]


def config_digest(cfg) -> str:
    """sha256 of the merged config (YAML files and their _BASE_s), so that editing a
    benchmark config makes its finished runs stale instead of silently reused. The
    sections of switched-off methods (MODEL.SADA without SADA; MIC and TEACHER without
    MIC) are left out: they cannot act on the run, so a new or changed SADA or MIC
    setting does not make source-only and oracle runs stale. Where a custom dataset lies
    (its ROOT) is left out too: the signature records what the CCTV set holds instead."""
    cfg = cfg.clone()
    cfg.defrost()
    for node in (cfg.DATASETS.get("CUSTOM") or {}).values():
        if "ROOT" in node:
            node.ROOT = ""
    if not cfg.MODEL.SADA.ENABLED:
        del cfg.MODEL["SADA"]
    if not cfg.MIC.ENABLED:
        del cfg["MIC"], cfg["TEACHER"]
    return hashlib.sha256(cfg.dump().encode()).hexdigest()


def build_plan(args) -> List[Run]:
    """One run per (shift, seed, method), seed by seed: an interrupted benchmark has every
    method at the same number of seeds, so its partial tables compare like with like."""
    runs = []
    for shift in args.shifts:
        methods = [m for m in args.methods if m in SHIFTS[shift].methods]
        cfgs = {m: read_config(SHIFTS[shift].config(m)) for m in methods}
        for seed in args.seeds:
            for method in methods:
                config, cfg = SHIFTS[shift].config(method), cfgs[method]
                sched = schedule_overrides(cfg, args.iters)
                data = data_overrides(cfg, shift, args.cctv_root, args.fog_root)
                out = os.path.join(args.output_dir, shift, method, f"seed{seed}")
                signature = {
                    "config": config,
                    "config_sha256": config_digest(cfg),
                    "seed": seed,
                    "schedule": sched,
                    "extra_opts": list(args.opts),
                    "fog": {**fog_params_public(args), "source": args.cctv_source}
                    if shift == "cctv_fog" else None,
                }
                opts = [*sched, "SEED", str(seed), *data, *args.opts, "OUTPUT_DIR", out]
                runs.append(Run(shift, method, seed, config, opts, out, signature,
                                list(cfg.DATASETS.TEST), args.iters or cfg.SOLVER.MAX_ITER))
    return runs


# =======================================================================================
# Reuse and execution
# =======================================================================================
def load_json(path: str):
    with open(path) as f:
        return json.load(f)


def same_settings(recorded: Optional[dict], wanted: dict) -> bool:
    """A run's recorded signature against the one asked for. An unknown CCTV source (the
    set is absent here, see source_fingerprint) matches whatever source was recorded."""
    wanted = json.loads(json.dumps(wanted))  # as it reads back from bench_run.json (tuples -> lists)
    fog = wanted.get("fog")
    if fog is not None and fog["source"] is None:
        fog["source"] = ((recorded or {}).get("fog") or {}).get("source")
    return recorded == wanted


def run_state(run: Run, force: bool = False) -> str:
    """``reuse`` (a results.json made with the same settings, or one without a record of
    its settings), ``resume`` (same settings, stopped after a checkpoint), ``stale``
    (made with other settings: redone from scratch) or ``new``."""
    results = os.path.join(run.output_dir, RESULTS_FILE)
    spec_path = os.path.join(run.output_dir, SPEC_FILE)
    if force or not os.path.isdir(run.output_dir):
        return "stale" if force and os.path.isdir(run.output_dir) else "new"
    spec = load_json(spec_path) if os.path.isfile(spec_path) else None
    if spec is not None and not same_settings(spec.get("signature"), run.signature):
        return "stale"
    if os.path.isfile(results):
        return "reuse"
    if spec is not None and os.path.isfile(os.path.join(run.output_dir, "last_checkpoint")):
        return "resume"
    return "stale" if os.listdir(run.output_dir) else "new"


def subprocess_launcher(command: List[str], log_path: str, env: dict) -> int:
    with open(log_path, "a") as log:
        return subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def execute(run: Run, state: str, env: dict, launcher: Callable = subprocess_launcher,
            keep_checkpoints: bool = False) -> dict:
    """Train and evaluate one run (unless reused); returns its record (see read_run)."""
    if state == "reuse":
        return read_run(run, reused=True)
    if state == "stale":
        shutil.rmtree(run.output_dir)
    os.makedirs(run.output_dir, exist_ok=True)
    spec_path = os.path.join(run.output_dir, SPEC_FILE)
    spec = load_json(spec_path) if state == "resume" else {"signature": run.signature, "seconds": 0.0}
    spec["command"] = shlex.join(run.command(resume=state == "resume"))
    here = environment()
    environments = spec.setdefault("environments", [])
    if not environments or environments[-1] != here:  # a resume elsewhere adds the second one
        environments.append(here)
    _write_json(spec_path, spec)
    start = time.time()
    rc = launcher(run.command(resume=state == "resume"), os.path.join(run.output_dir, "train_net.out"), env)
    spec["seconds"] = spec.get("seconds", 0.0) + time.time() - start
    spec["returncode"] = rc
    _write_json(spec_path, spec)
    if rc != 0 or not os.path.isfile(os.path.join(run.output_dir, RESULTS_FILE)):
        return {**_run_header(run), "error": f"tools/train_net.py exited with {rc}; see "
                f"{os.path.join(run.output_dir, 'train_net.out')}", "seconds": spec["seconds"]}
    if not keep_checkpoints:  # model_final.pth stays; the periodic ones are only for resuming
        for name in os.listdir(run.output_dir):
            if name.startswith("model_0") and name.endswith(".pth"):
                os.remove(os.path.join(run.output_dir, name))
    return read_run(run, reused=False)


def _write_json(path: str, data) -> None:
    from mic_det.utils.io import atomic_write

    with atomic_write(path) as f:
        json.dump(data, f, indent=2)


def _run_header(run: Run) -> dict:
    return {"shift": run.shift, "method": run.method, "seed": run.seed, "dir": run.output_dir,
            "config": run.config}


def _bbox(entry) -> Optional[dict]:
    """AP50 and AP of one results.json entry. detectron2 writes null for every metric when
    the model made no detection at all on the test set: that is an AP of 0 (nothing
    recalled), recorded as 0.0 with ``no_detections``."""
    if not entry or "bbox" not in entry:
        return None
    ap50, ap = entry["bbox"].get("AP50"), entry["bbox"].get("AP")
    if ap50 is None and ap is None:
        return {"AP50": 0.0, "AP": 0.0, "no_detections": True}
    return {"AP50": ap50, "AP": ap}


def read_run(run: Run, reused: bool) -> dict:
    """The record of a finished run: AP50 / AP of the reported model on every test set
    (``datasets``; for MIC the teacher, key ``teacher/<dataset>``), plus for MIC the
    student (``student``) and the student at the end of burn-in (``burn_in``)."""
    results = load_json(os.path.join(run.output_dir, RESULTS_FILE))
    spec_path = os.path.join(run.output_dir, SPEC_FILE)
    spec = load_json(spec_path) if os.path.isfile(spec_path) else {}
    record = {**_run_header(run), "reused": reused, "seconds": spec.get("seconds"),
              "environments": spec.get("environments", []), "datasets": {}}
    for ds in run.test_sets:
        if run.method in MIC_METHODS:
            record["datasets"][ds] = _bbox(results.get(f"teacher/{ds}"))
            record.setdefault("student", {})[ds] = _bbox(results.get(f"student/{ds}"))
            if f"burn_in/{ds}" in results:
                record.setdefault("burn_in", {})[ds] = _bbox(results.get(f"burn_in/{ds}"))
        else:
            record["datasets"][ds] = _bbox(results.get(ds))
        if record["datasets"][ds] is None:
            record.setdefault("missing", []).append(ds)
    return record


# =======================================================================================
# Summary: mean, std, fraction of the gap closed
# =======================================================================================
def mean_std(values: Sequence[float]):
    """Mean and sample standard deviation (n - 1; None for fewer than 2 values)."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def gap_closed(mean: Optional[float], source_only: Optional[float], oracle: Optional[float]) -> Optional[float]:
    """``(m - so) / (oracle - so)`` from the means; None when a term is missing or the gap
    is <= 0 (the oracle is no better than source only: nothing to close)."""
    if mean is None or source_only is None or oracle is None:
        return None
    gap = oracle - source_only
    if gap <= 0:
        return None
    return (mean - source_only) / gap


def summarize(records: Sequence[dict], metric: str = "AP50") -> Dict[str, Dict[str, Dict[str, dict]]]:
    """``{shift: {dataset: {method: {values: {seed: v}, mean, std, n, gap_closed}}}}`` over
    the successful runs, shifts / datasets / methods in their order of appearance."""
    out: Dict[str, Dict[str, Dict[str, dict]]] = {}
    for r in records:
        for ds, m in (r.get("datasets") or {}).items():
            cell = out.setdefault(r["shift"], {}).setdefault(ds, {}).setdefault(r["method"], {"values": {}})
            if m is not None and m.get(metric) is not None:
                cell["values"][str(r["seed"])] = m[metric]
    for datasets in out.values():
        for methods in datasets.values():
            for cell in methods.values():
                cell["mean"], cell["std"] = mean_std(list(cell["values"].values()))
                cell["n"] = len(cell["values"])
            so = methods.get("source_only", {}).get("mean")
            oracle = methods.get("oracle", {}).get("mean")
            for cell in methods.values():
                cell["gap_closed"] = gap_closed(cell["mean"], so, oracle)
    return out


def amp_comparison(methods: Dict[str, dict]) -> Optional[str]:
    """One sentence comparing mic_amp with mic over the seeds both finished: the mean of
    the per-seed differences (same seed = same data order and masks), their spread, and
    the fp32 runs' own seed spread to judge it against."""
    fp32, amp = methods.get("mic", {}).get("values", {}), methods.get("mic_amp", {}).get("values", {})
    seeds = sorted(set(fp32) & set(amp), key=int)
    if not seeds:
        return None
    diffs = [amp[s] - fp32[s] for s in seeds]
    d_mean, d_std = mean_std(diffs)
    _, spread = mean_std([fp32[s] for s in seeds])
    return (f"Mixed precision vs fp32 (MIC teacher, seeds {', '.join(seeds)}): AP50 difference "
            f"{d_mean:+.1f}" + ("" if d_std is None else f" ± {d_std:.1f}") + " (bf16 − fp32, per seed: "
            + " / ".join(f"{d:+.1f}" for d in diffs) + "); seed spread (std) of the fp32 runs: "
            + _fmt(spread) + ".")


def gap_note(methods: Dict[str, dict]) -> Optional[str]:
    """The size of the source-only -> oracle gap next to the seed spread of both ends; a
    warning when the gap is not at least twice the larger spread, because the fractions
    of the gap closed are then dominated by noise."""
    so, oracle = methods.get("source_only", {}), methods.get("oracle", {})
    if so.get("mean") is None or oracle.get("mean") is None:
        return None
    gap = oracle["mean"] - so["mean"]
    spreads = [c["std"] for c in (so, oracle) if c.get("std") is not None]
    text = (f"Gap (oracle − source only): {gap:+.1f} AP50; seed std of source only / oracle: "
            f"{_fmt(so.get('std'))} / {_fmt(oracle.get('std'))}.")
    if gap <= 0:
        return text + " **No gap**: on this test set the shift costs source-only training nothing measurable, so no method can be said to close it."
    if spreads and gap < 2 * max(spreads):
        return text + (" **The gap is within twice the seed spread**: the gap-closed fractions above are "
                       "dominated by noise; compare the AP50 values and their spreads instead.")
    return text


def _fmt(v: Optional[float], digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_table(methods: Dict[str, dict], seeds: Sequence[int], metric: str = "AP50") -> str:
    seed_list = ", ".join(str(s) for s in seeds)
    lines = [
        f"| method | {metric} mean ± std (n) | per seed ({seed_list}) | gap closed |",
        "|---|---|---|---|",
    ]
    for method in [m for m in ALL_METHODS if m in methods] + [m for m in methods if m not in ALL_METHODS]:
        cell = methods[method]
        if cell["mean"] is None:
            main = f"n/a (0)"
        elif cell["std"] is None:
            main = f"{cell['mean']:.1f} (n={cell['n']})"
        else:
            main = f"{cell['mean']:.1f} ± {cell['std']:.1f} ({cell['n']})"
        per_seed = " / ".join(_fmt(cell["values"].get(str(s))) if str(s) in cell["values"] else "–" for s in seeds)
        gap = "n/a" if cell["gap_closed"] is None else f"{100 * cell['gap_closed']:.0f} %"
        lines.append(f"| {METHOD_LABELS.get(method, method)} | {main} | {per_seed} | {gap} |")
    return "\n".join(lines)


def format_markdown(summary, records, settings) -> str:
    seeds = settings["seeds"]
    parts = [
        "# Accuracy benchmark",
        "",
        f"Command: `{settings['command']}`",
        "",
        "AP50 (%) on the target-domain test set at the end of training; mean ± sample std over seeds "
        "(n = seeds that finished). Gap closed = (method − source only) / (oracle − source only), "
        "from the means; n/a when the oracle is not above source only. MIC: the EMA teacher.",
    ]
    for shift, datasets in summary.items():
        sh = SHIFTS.get(shift)
        iters = settings["iters"].get(shift)
        parts += ["", f"## {shift}", ""]
        if sh is not None:
            parts += [f"{sh.description}. {sh.train}. {iters} iterations per run; seeds {', '.join(map(str, seeds))}."]
        seconds = [r["seconds"] for r in records if r.get("shift") == shift and r.get("seconds")]
        if seconds:
            parts += ["", f"Wall time of its {len(seconds)} runs (training + evaluation, as recorded): "
                      f"{sum(seconds) / 3600:.2f} h on {settings.get('machine', 'this machine')}."]
        envs = {json.dumps(e, sort_keys=True) for r in records if r.get("shift") == shift
                for e in r.get("environments") or []}
        if len(envs) > 1:
            parts += ["", f"Its runs were made in {len(envs)} different environments (CPU or library "
                      "versions, listed per run in accuracy.json): a seed trained elsewhere can end "
                      "elsewhere, so treat the spread as covering both."]
        for i, (ds, methods) in enumerate(datasets.items()):
            parts += ["", f"### {ds}" + (" (headline)" if i == 0 and len(datasets) > 1 else ""), ""]
            parts.append(format_table(methods, seeds))
            for method in (m for m in MIC_METHODS if m in methods):
                students = [r["student"][ds]["AP50"] for r in records
                            if r.get("shift") == shift and r.get("method") == method
                            and (r.get("student") or {}).get(ds) and r["student"][ds].get("AP50") is not None]
                if students:
                    m, s = mean_std(students)
                    parts += ["", f"{STUDENT_LABELS[method]} (not the reported model): AP50 {_fmt(m)}"
                              + ("" if s is None else f" ± {s:.1f}") + f" ({len(students)})."]
            note = gap_note(methods)
            if note:
                parts += ["", note]
            amp = amp_comparison(methods)
            if amp:
                parts += ["", amp]
    if settings.get("unfinished"):
        parts += ["", "Not finished yet (left out above; the command resumes them):", ""] + [
            f"- {key}" for key in settings["unfinished"]]
    failed = [r for r in records if r.get("error")]
    if failed:
        parts += ["", "Failed runs (left out above):", ""] + [f"- {r['shift']}/{r['method']}/seed{r['seed']}: {r['error']}" for r in failed]
    return "\n".join(parts) + "\n"


def plot(summary, path: str, metric: str = "AP50") -> None:
    """One panel per shift: a bar per method and test set, error bars = std (none for a single run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shifts = list(summary)
    fig, axes = plt.subplots(1, max(1, len(shifts)), figsize=(5.5 * max(1, len(shifts)), 4.2), squeeze=False)
    for ax, shift in zip(axes[0], shifts):
        datasets = list(summary[shift])
        methods = [m for m in ALL_METHODS if any(m in summary[shift][d] for d in datasets)]
        width = 0.8 / max(1, len(datasets))
        for j, ds in enumerate(datasets):
            xs, means, stds = [], [], []
            for i, m in enumerate(methods):
                cell = summary[shift][ds].get(m)
                if cell is None or cell["mean"] is None:
                    continue
                xs.append(i + (j - (len(datasets) - 1) / 2) * width)
                means.append(cell["mean"])
                stds.append(cell["std"])
            # a single run has no spread: NaN draws no error bar (a zero-length one would read as "no spread")
            bars = ax.bar(xs, means, width, yerr=[math.nan if e is None else e for e in stds], capsize=3,
                          label=ds, alpha=0.85 if j == 0 else 0.5)
            for b, v, e in zip(bars, means, stds):
                ax.annotate(f"{v:.1f}" if e is not None else f"{v:.1f}\n(1 run)",
                            (b.get_x() + b.get_width() / 2, v + (e or 0.0)), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 2), textcoords="offset points")
        top = max([c["mean"] + (c["std"] or 0.0) for d in datasets for c in summary[shift][d].values()
                   if c["mean"] is not None] + [1.0])
        ax.set_ylim(0, top * 1.25)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([{"mic": "mic (teacher)", "mic_amp": "mic bf16\n(teacher)"}.get(m, m.replace("_", " "))
                            for m in methods])
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(shift)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{metric} on the target test sets, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# =======================================================================================
# The cctv_fog data: fogged copies of the CCTV frames, generated once
# =======================================================================================
def fog_params_public(args) -> dict:
    return {"version": FOG_VERSION, "beta": args.fog_beta, "horizon": args.fog_horizon}


def _source_listing(cctv_root: str) -> dict:
    """Per split: number and total size of the images and of the label files (cheap: stat
    only), to notice a changed source set."""
    from mic_det.datagen.fog import list_images

    out = {}
    for split in CCTV_SPLITS:
        folder = os.path.join(cctv_root, split, "images")
        if not os.path.isdir(folder):
            raise SystemExit(f"error: {folder} not found (the CCTV fire/smoke set; pass --cctv-root DIR)")
        rels = list_images(folder)
        labels = os.path.join(cctv_root, split, "labels")
        label_files = sorted(f for f in os.listdir(labels) if f.endswith(".txt")) if os.path.isdir(labels) else []
        out[split] = {"images": len(rels), "bytes": sum(os.path.getsize(os.path.join(folder, r)) for r in rels),
                      "labels": len(label_files),
                      "label_bytes": sum(os.path.getsize(os.path.join(labels, f)) for f in label_files)}
    return out


def source_fingerprint(cctv_root: str) -> Optional[dict]:
    """What the CCTV set holds, not where it lies, for the run signatures: records made on
    another machine, with the set under another path, are still recognised. None where the
    set is absent: ``--report-only`` then takes the recorded runs as they are (anything
    that trains stops earlier, in prepare_cctv_fog, with the reason)."""
    try:
        return _source_listing(cctv_root)
    except (SystemExit, OSError):
        return None


def fog_status(args) -> tuple:
    """(state, params): state ``current`` (nothing to do), ``partial`` (same settings,
    interrupted: continue) or ``redo``."""
    from mic_det.datagen import fog

    params = {
        **fog_params_public(args),
        "near_distance": fog.DEFAULT_NEAR_DISTANCE,
        "max_distance": fog.DEFAULT_MAX_DISTANCE,
        "atmospheric_light": "auto",
        "source": os.path.realpath(args.cctv_root),
        # without the set, _source_listing raises the error that names the missing folder
        "listing": args.cctv_source or _source_listing(args.cctv_root),
    }
    stamp_path = os.path.join(args.fog_root, FOG_STAMP)
    stamp = load_json(stamp_path) if os.path.isfile(stamp_path) else None
    if stamp is None or stamp.get("params") != params:
        return "redo", params
    return ("current" if stamp.get("complete") else "partial"), params


def prepare_cctv_fog(args, log=_print) -> str:
    """Make sure ``args.fog_root`` holds the fogged CCTV set for the current settings:
    ``{train,valid,test}/images`` fogged with the ground-plane prior, ``labels`` and
    ``data.yaml`` copied as they are (fog moves no pixel). Skipped when ``FOG.json`` says
    the same settings and source files; an interrupted generation continues."""
    from mic_det.datagen import fog

    try:
        state, params = fog_status(args)
    except SystemExit as e:
        if not args.dry_run:
            raise
        log(f"# {e}")
        return "missing"
    if state == "current":
        log(f"cctv_fog: fogged copy up to date in {args.fog_root}")
        return state
    if args.dry_run:
        log(f"# would render the fogged copy of {args.cctv_root} into {args.fog_root} "
            f"(beta {args.fog_beta}, horizon {args.fog_horizon})")
        return state
    if state == "redo" and os.path.isdir(args.fog_root):
        if not os.path.isfile(os.path.join(args.fog_root, FOG_STAMP)):
            raise SystemExit(f"error: {args.fog_root} exists but was not made by this benchmark (no {FOG_STAMP}); "
                             "move it away or set DETECTRON2_DATASETS elsewhere")
        shutil.rmtree(args.fog_root)
    os.makedirs(args.fog_root, exist_ok=True)
    stamp_path = os.path.join(args.fog_root, FOG_STAMP)
    _write_json(stamp_path, {"params": params, "complete": False})
    options = fog.FogOptions(horizon=args.fog_horizon, near_distance=params["near_distance"],
                             max_distance=params["max_distance"], atmospheric_light=None)
    start = time.time()
    for split in CCTV_SPLITS:
        src, dst = os.path.join(args.cctv_root, split), os.path.join(args.fog_root, split)
        summary = fog.make_foggy_folder(os.path.join(src, "images"), os.path.join(dst, "images"),
                                        args.fog_beta, options, num_workers=args.fog_workers)
        if os.path.isdir(os.path.join(src, "labels")):
            shutil.copytree(os.path.join(src, "labels"), os.path.join(dst, "labels"), dirs_exist_ok=True)
        log(f"cctv_fog: {split}: {summary['written']} images fogged, {summary['skipped']} already there")
    shutil.copy2(os.path.join(args.cctv_root, "data.yaml"), os.path.join(args.fog_root, "data.yaml"))
    _write_json(stamp_path, {"params": params, "complete": True})
    log(f"cctv_fog: fogged copy written to {args.fog_root} in {time.time() - start:.0f} s")
    return state


# =======================================================================================
# Command line
# =======================================================================================
def _csv(kind, choices=None):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if kind is int:
            try:
                items = [int(t) for t in items]
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
        if choices is not None:
            bad = [t for t in items if t not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        return items
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shifts", type=_csv(str, tuple(SHIFTS)), default=",".join(SHIFTS),
                        help="comma-separated (default %(default)s)")
    parser.add_argument("--methods", type=_csv(str, ALL_METHODS), default=",".join(METHODS),
                        help="comma-separated, from " + ", ".join(ALL_METHODS) + " (default %(default)s; "
                        "mic_amp = MIC with SOLVER.AMP.ENABLED, synthetic shift only)")
    parser.add_argument("--seeds", type=_csv(int), default=",".join(map(str, DEFAULT_SEEDS)),
                        help="comma-separated values of cfg.SEED (default %(default)s)")
    parser.add_argument("--iters", type=int, default=None,
                        help="SOLVER.MAX_ITER of every run; STEPS, WARMUP_ITERS and MIC's burn-in scaled "
                        "proportionally (default: each config's own schedule: synthetic 800, cctv_fog 1000)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="default %(default)s")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--force", action="store_true", help="redo runs that already have a results.json")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the report from the runs of the plan that have finished "
                        "(e.g. while a benchmark is still running, or after stopping one); the others are "
                        "listed as not finished")
    parser.add_argument("--cctv-root", default=default_cctv_root(),
                        help="the CCTV fire/smoke set (default $DETECTRON2_DATASETS/cctv-fire-smoke, ./datasets without it)")
    parser.add_argument("--fog-beta", type=float, default=DEFAULT_FOG_BETA, help="cctv_fog: fog density (default %(default)s)")
    parser.add_argument("--fog-horizon", type=float, default=DEFAULT_FOG_HORIZON,
                        help="cctv_fog: horizon row as a fraction of the height, negative = above the image "
                        "(default %(default)s)")
    parser.add_argument("--fog-workers", type=int, default=1, help="cctv_fog: processes rendering fog (default 1)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep the periodic model_XXXXXXX.pth of finished runs (model_final.pth is always kept)")
    parser.add_argument("--save-records", metavar="DIR", default=None,
                        help="after the report, copy each finished run's results.json and bench_run.json "
                        "(no weights) and the report to DIR, in the same layout: a record to commit, read "
                        "back with --output-dir DIR --report-only")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE config overrides applied to every run (after the benchmark's own)")


def machine_description() -> str:
    text = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name()} present"
    except ImportError:  # pragma: no cover
        pass
    return text


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ENVIRONMENT_MODULES = (("torch", "torch"), ("torchvision", "torchvision"), ("detectron2", "detectron2"),
                       ("numpy", "numpy"), ("pillow", "PIL"), ("opencv", "cv2"), ("pycocotools", "pycocotools"))


@functools.lru_cache(maxsize=None)
def _environment() -> dict:
    """Computed once per benchmark process (the imports and /proc read do not change)."""
    env = {"machine": machine_description(), "cpu": _cpu_model(), "python": platform.python_version()}
    for key, module in ENVIRONMENT_MODULES:
        try:
            env[key] = getattr(importlib.import_module(module), "__version__", "unknown")
        except ImportError:
            env[key] = None
    return env


def environment() -> dict:
    """What a run's numbers depend on besides its settings. Training is bit-exact on one
    machine, but the same seed trained with other CPU kernels or another image decoder
    takes another path and can end several AP50 away, so each run records where it ran."""
    return dict(_environment())  # a copy (its values are strings): callers may keep or change it


def save_records(records: Sequence[dict], output_dir: str, dest: str) -> int:
    """Copy the record of every finished run (``results.json`` and ``bench_run.json``, no
    weights) and the report to ``dest``, in the output folder's layout: small enough to
    commit, and read back by ``--output-dir DEST --report-only`` (or copied into an output
    folder, where the benchmark then trains only the runs that are missing)."""
    count = 0
    for rec in records:
        if rec.get("error"):
            continue
        target = os.path.join(dest, rec["shift"], rec["method"], f"seed{rec['seed']}")
        os.makedirs(target, exist_ok=True)
        for name in (RESULTS_FILE, SPEC_FILE):
            if os.path.isfile(os.path.join(rec["dir"], name)):
                shutil.copy2(os.path.join(rec["dir"], name), os.path.join(target, name))
        count += 1
    for name in (REPORT_JSON, REPORT_MD, REPORT_PNG):
        shutil.copy2(os.path.join(output_dir, name), os.path.join(dest, name))
    return count


def resolve_paths(args):
    """Absolute output and data folders (the runs are started from the repository root),
    and what the CCTV set holds, read once: the run signatures and the fog copy's stamp
    both name the set by it."""
    args.output_dir = os.path.abspath(args.output_dir)
    args.cctv_root = os.path.abspath(args.cctv_root)
    args.cctv_source = source_fingerprint(args.cctv_root) if "cctv_fog" in args.shifts else None
    args.fog_root = os.path.join(datasets_root(), FOG_DIRNAME)
    return args


def run_benchmark(args, launcher: Callable = subprocess_launcher, log=_print) -> int:
    """Plan, run (or print), summarise. Returns the exit status: 1 if a run failed."""
    check_extra_opts(args.opts)
    resolve_paths(args)
    runs = build_plan(args)
    for pair in skipped_pairs(args):
        log(f"# {pair}: no config for this method on this shift, left out")
    if not runs:
        raise SystemExit("error: nothing to run for these --shifts / --methods")
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root())

    if args.report_only and (args.force or args.dry_run):
        raise SystemExit("error: --report-only trains nothing; it cannot be combined with --force or --dry-run")
    if "cctv_fog" in args.shifts and not args.report_only:
        prepare_cctv_fog(args, log)
    states = {r.key: run_state(r, args.force) for r in runs}
    if args.dry_run:
        for r in runs:
            state = states[r.key]
            note = {"reuse": "# reuse (results.json present): ", "stale": "# redo (other settings): ",
                    "resume": "# resume: "}.get(state, "")
            log(note + shlex.join(r.command(resume=state == "resume")))
        return 0

    records, unfinished = [], []
    if args.report_only:
        records = [read_run(r, reused=True) for r in runs if states[r.key] == "reuse"]
        unfinished = [r.key for r in runs if states[r.key] != "reuse"]
        for key in unfinished:
            log(f"# {key}: not finished ({states[key]}), left out of the report")
        runs_to_train = []
    else:
        runs_to_train = runs
    total = len(runs_to_train)
    for i, r in enumerate(runs_to_train, 1):
        state = states[r.key]
        log(f"[{i}/{total}] {r.key}: " + {"reuse": "reusing results.json", "resume": "resuming from its last checkpoint",
                                          "stale": "settings changed or --force: running again"}.get(state, "running"))
        rec = execute(r, state, env, launcher, args.keep_checkpoints)
        records.append(rec)
        if rec.get("error"):
            log(f"    FAILED: {rec['error']}")
        elif state != "reuse":
            ap = ", ".join(f"{d} AP50 {_fmt((m or {}).get('AP50'))}" for d, m in rec["datasets"].items())
            log(f"    {ap} ({rec['seconds']:.0f} s)")

    summary = summarize([r for r in records if not r.get("error")])
    iters = {r.shift: r.iters for r in runs}
    argv = [a for a in getattr(args, "argv", []) if a != "--report-only"]  # the command that makes these runs
    settings = {
        "command": shlex.join(["python", "tools/benchmark.py", "accuracy", *argv]),
        "shifts": args.shifts, "methods": args.methods, "seeds": args.seeds, "iters": iters,
        "extra_opts": list(args.opts), "output_dir": args.output_dir,
        "cctv_fog": {**fog_params_public(args), "source": args.cctv_root, "fogged": args.fog_root}
        if "cctv_fog" in args.shifts else None,
        "metric": "AP50 (%), COCO, at the end of training; MIC: the EMA teacher",
        "machine": machine_description(),
        "unfinished": unfinished,
    }
    report = {"settings": settings, "runs": records, "summary": summary}
    os.makedirs(args.output_dir, exist_ok=True)
    _write_json(os.path.join(args.output_dir, REPORT_JSON), report)
    markdown = format_markdown(summary, records, settings)
    with open(os.path.join(args.output_dir, REPORT_MD), "w") as f:
        f.write(markdown)
    plot(summary, os.path.join(args.output_dir, REPORT_PNG))
    log("")
    log(markdown)
    log(f"Written: {os.path.join(args.output_dir, REPORT_JSON)}, {REPORT_MD}, {REPORT_PNG}")
    if args.save_records and os.path.abspath(args.save_records) != args.output_dir:
        n = save_records(records, args.output_dir, args.save_records)
        log(f"Records of {n} finished runs and the report copied to {args.save_records}")
    return 1 if any(r.get("error") for r in records) else 0
