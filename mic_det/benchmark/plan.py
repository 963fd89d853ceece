"""The accuracy benchmark's runs: plan them, decide what to reuse, run the rest.

Every (shift, method, seed) is one ordinary ``tools/train_net.py`` subprocess with its own
folder; its signature (the merged config's digest, seed, schedule, overrides, fog, dusk
style) is
recorded next to its ``results.json``, so a finished run is reused only when nothing that
could change its numbers has changed, and an interrupted one resumes from its checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from detectron2.config import get_cfg

from ..config import add_mic_config
from .environment import environment
from .files import RESULTS_FILE, SPEC_FILE, load_json, write_json
from .shifts import CCTV_SPLITS, MIC_METHODS, SHIFTS, fog_params_public

# mic_det/benchmark/ is two levels below the repository root
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join("tools", "train_net.py")  # run with cwd = REPO


@dataclass
class Run:
    """One train_net run of the plan, and what must match for its results to be reused."""

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
    cfg = get_cfg()
    add_mic_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, path))
    return cfg


def scale_iters(value: int, iters: int, max_iter: int) -> int:
    return int(round(value * iters / max_iter))


def schedule_overrides(cfg, iters: Optional[int]) -> List[str]:
    """``--iters N``: SOLVER.MAX_ITER N, and every iteration count of the schedule scaled
    by N / MAX_ITER of the config, rounded: SOLVER.STEPS (those not in (0, N) dropped),
    SOLVER.WARMUP_ITERS, TEACHER.BURN_IN_ITERS (MIC keeps the same burn-in fraction,
    at least 1 iteration and at most N - 1) and MRT.SELECTIVE_RETRAINING.PERIOD (at least
    1). None: the config's schedule unchanged."""
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
    if cfg.MIC.ENABLED and cfg.MRT.SELECTIVE_RETRAINING.ENABLED:
        period = max(scale_iters(cfg.MRT.SELECTIVE_RETRAINING.PERIOD, iters, base), 1)
        opts += ["MRT.SELECTIVE_RETRAINING.PERIOD", str(period)]
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
    MIC; MRT with all its options off) are left out: they cannot act on the run, so a
    new or changed SADA, MIC or MRT setting does not make the runs without it stale. Where a custom dataset lies
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
    if not any(node.ENABLED for node in cfg.MRT.values()):
        del cfg["MRT"]
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
                if SHIFTS[shift].data_version:  # only where set: older records of the other shifts stay valid
                    signature["data"] = SHIFTS[shift].data_version
                opts = [*sched, "SEED", str(seed), *data, *args.opts, "OUTPUT_DIR", out]
                runs.append(Run(shift, method, seed, config, opts, out, signature,
                                list(cfg.DATASETS.TEST), args.iters or cfg.SOLVER.MAX_ITER))
    return runs


# ---- reuse and execution --------------------------------------------------------------
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
    write_json(spec_path, spec)
    start = time.time()
    rc = launcher(run.command(resume=state == "resume"), os.path.join(run.output_dir, "train_net.out"), env)
    spec["seconds"] = spec.get("seconds", 0.0) + time.time() - start
    spec["returncode"] = rc
    write_json(spec_path, spec)
    if rc != 0 or not os.path.isfile(os.path.join(run.output_dir, RESULTS_FILE)):
        return {**_run_header(run), "error": f"tools/train_net.py exited with {rc}; see "
                f"{os.path.join(run.output_dir, 'train_net.out')}", "seconds": spec["seconds"]}
    if not keep_checkpoints:  # model_final.pth stays; the periodic ones are only for resuming
        for name in os.listdir(run.output_dir):
            if name.startswith("model_0") and name.endswith(".pth"):
                os.remove(os.path.join(run.output_dir, name))
    return read_run(run, reused=False)


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


