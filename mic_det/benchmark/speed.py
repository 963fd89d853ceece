"""The cost of training: seconds per step and memory of the real training step.

The ``speed`` and ``memory`` subcommands of ``tools/benchmark.py``. Both drive the
trainer's own step (DomainAdaptiveTrainer), not a model in isolation, so the figures
include data loading, the teacher and the masked pass exactly as training pays them.
``speed`` times source only, SADA and MIC in one process at the same settings, so their
ratios are not confounded by the machine; ``memory`` runs one config for many steps to
show that memory stays flat after warm-up.
"""
import json
import os
import platform
import sys
import time

import psutil
import torch
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from ..config import load_config
from ..data.loaders import trains_on_gpu
from ..engine import DomainAdaptiveTrainer

MODES = {
    "source_only": dict(sada=False, mic=False),
    "sada": dict(sada=True, mic=False),
    "mic": dict(sada=True, mic=True),
    # MIC with mixed precision (SOLVER.AMP.PRECISION, bfloat16 by default), to time AMP
    # against fp32 MIC in the same process: --modes sada,mic,mic_amp
    "mic_amp": dict(sada=True, mic=True, amp=True),
}


def mode_config(base, sada, mic, output_dir, amp=False):
    """``base`` with one mode switched on, burn-in 0 (MIC's teacher and masked pass run
    from the first step) and no evaluation: the modes differ only in what a step does."""
    cfg = base.clone()
    cfg.defrost()
    cfg.MODEL.SADA.ENABLED = sada
    cfg.MIC.ENABLED = mic
    cfg.SOLVER.AMP.ENABLED = cfg.SOLVER.AMP.ENABLED or amp
    cfg.TEACHER.BURN_IN_ITERS = 0
    cfg.TEST.EVAL_MODEL = "both" if mic else "student"
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = output_dir
    if not cfg.DATASETS.TRAIN_TARGET:
        raise SystemExit("the config must name DATASETS.TRAIN_TARGET (SADA and MIC need it)")
    return cfg


def training_steps(cfg, iters, source_only=False):
    """Build the trainer of ``cfg`` and run ``iters`` of its steps; after each, yield
    (iteration, seconds the step took, the EventStorage)."""
    seed_all_rng(0)
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    step = trainer._trainer
    if source_only:
        step.data_loader = step.data_loader.source  # reads the source stream only
    cuda = trains_on_gpu(cfg)
    with EventStorage(0) as storage:
        trainer.storage = storage
        for i in range(iters):
            step.iter = storage.iter = i
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step.run_step()
            if cuda:
                torch.cuda.synchronize()
            yield i, time.perf_counter() - t0, storage
            storage.step()


def measure(cfg, warmup, iters):
    """Seconds per step and peak memory of ``iters`` steps after ``warmup``."""
    cuda = trains_on_gpu(cfg)
    process = psutil.Process()
    peak_rss, times, waits, pseudo = 0, [], [], []
    source_only = not (cfg.MODEL.SADA.ENABLED or cfg.MIC.ENABLED)
    for i, seconds, storage in training_steps(cfg, warmup + iters, source_only):
        if i == warmup - 1 and cuda:
            torch.cuda.reset_peak_memory_stats()
        if i >= warmup:
            times.append(seconds)
            latest = storage.latest()
            # time the step waited for its batch: near 0 when the loader keeps up
            waits.append(latest["data_time"][0])
            # MIC only costs its masked pass when pseudo-labels survive: report how many did
            if "mic/pseudo_boxes_per_image" in latest:
                pseudo.append(latest["mic/pseudo_boxes_per_image"][0])
        peak_rss = max(peak_rss, process.memory_info().rss)
    times.sort()
    waits.sort()
    out = {
        "sec_per_iter_mean": sum(times) / len(times),
        "sec_per_iter_median": times[len(times) // 2],
        "data_wait_sec_median": waits[len(waits) // 2],
        "peak_host_rss_mb": peak_rss / 2**20,
    }
    if pseudo:
        out["pseudo_boxes_per_image"] = sum(pseudo) / len(pseudo)
    if cuda:
        out["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def memory_trace(cfg, iters, every):
    """RSS (MB) and CUDA allocated memory every ``every`` iterations of the config."""
    process = psutil.Process()
    samples = []
    for i, _, _ in training_steps(cfg, iters):
        if (i + 1) % every == 0:
            row = {"iter": i + 1, "rss_mb": process.memory_info().rss / 2**20}
            if trains_on_gpu(cfg):
                row["cuda_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
            samples.append(row)
            print(", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return samples


def run_memory(args) -> None:
    """The ``memory`` subcommand: RSS sampled over ``args.iters`` steps, printed and
    written to ``args.out``, with the growth after the first third (the warm-up)."""
    cfg = load_config(args.config, args.opts)
    cfg.defrost()
    cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "bench_memory")
    samples = memory_trace(cfg, args.iters, args.every)
    warm = [r["rss_mb"] for r in samples[len(samples) // 3 :]]
    report = {
        "config": args.config,
        "overrides": args.opts,
        "samples": samples,
        "rss_growth_after_warmup_mb": warm[-1] - warm[0] if warm else None,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


def run_speed(args) -> None:
    """The ``speed`` subcommand: every mode of ``args.modes`` measured in turn, then the
    ratios to source only, SADA and (for mic_amp) MIC; printed and written to ``args.out``."""
    base = load_config(args.config, args.opts)
    results = {}
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        sys.exit(f"error: --modes: unknown {unknown}; choose from {', '.join(MODES)}")
    for name in modes:
        cfg = mode_config(base, **MODES[name], output_dir=os.path.join(base.OUTPUT_DIR, f"bench_{name}"))
        results[name] = measure(cfg, args.warmup, args.iters)
        results[name]["amp"] = cfg.SOLVER.AMP.PRECISION if cfg.SOLVER.AMP.ENABLED else None
        print(f"{name:12s} {results[name]['sec_per_iter_median']:.3f} s/iter (median of {args.iters})", flush=True)
    for name, r in results.items():
        if "source_only" in results:
            r["ratio_to_source_only"] = r["sec_per_iter_median"] / results["source_only"]["sec_per_iter_median"]
        if "sada" in results:
            r["ratio_to_sada"] = r["sec_per_iter_median"] / results["sada"]["sec_per_iter_median"]
        if "mic" in results and name == "mic_amp":
            r["ratio_to_mic"] = r["sec_per_iter_median"] / results["mic"]["sec_per_iter_median"]
    report = {
        "config": args.config,
        "overrides": args.opts,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "images_per_step": {"source": base.SOLVER.IMS_PER_BATCH, "target": base.SOLVER.IMS_PER_BATCH_TARGET},
        "iters": args.iters,
        "warmup": args.warmup,
        "modes": results,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
