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
import os
import shlex
from typing import Callable

from .environment import machine_description
from .files import REPORT_JSON, REPORT_MD, REPORT_PNG, write_json
from .plan import build_plan, check_extra_opts, execute, read_run, run_state, skipped_pairs, subprocess_launcher
from .report import fmt, format_markdown, plot, save_records, summarize
from .shifts import (
    ALL_METHODS,
    DEFAULT_FOG_BETA,
    DEFAULT_FOG_HORIZON,
    FOG_DIRNAME,
    METHODS,
    SHIFTS,
    datasets_root,
    default_cctv_root,
    fog_params_public,
    prepare_cctv_fog,
    source_fingerprint,
)

DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_OUTPUT_DIR = os.path.join("output", "bench_accuracy")


def _print(*args):
    print(*args, flush=True)


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
                        "mic_amp = MIC with SOLVER.AMP.ENABLED, synthetic shift only; mic_dt, mic_sr, mic_mr, "
                        "mic_mrt = MIC with MRT's options, docs/mrt.md; mic_thr06, mic_bi300 = MIC with pseudo-label threshold 0.6, "
                        "burn-in 300; the last six on the synthetic shifts only)")
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
            ap = ", ".join(f"{d} AP50 {fmt((m or {}).get('AP50'))}" for d, m in rec["datasets"].items())
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
    write_json(os.path.join(args.output_dir, REPORT_JSON), report)
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
