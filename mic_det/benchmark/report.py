"""The accuracy benchmark's report: mean and spread over seeds, the gap closed, tables, chart.

Apart from running so that a report can be rebuilt from finished runs alone
(``--report-only``, or committed records read back), and so that the arithmetic can be
tested on hand-made records. Each table says when its numbers cannot carry a
conclusion: a gap within the seed spread, or runs made in different environments.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from typing import Dict, Optional, Sequence

from .files import REPORT_JSON, REPORT_MD, REPORT_PNG, RESULTS_FILE, SPEC_FILE
from .shifts import ALL_METHODS, METHOD_LABELS, MIC_METHODS, SHIFTS, STUDENT_LABELS


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
            + fmt(spread) + ".")


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
            f"{fmt(so.get('std'))} / {fmt(oracle.get('std'))}.")
    if gap <= 0:
        return text + " **No gap**: on this test set the shift costs source-only training nothing measurable, so no method can be said to close it."
    if spreads and gap < 2 * max(spreads):
        return text + (" **The gap is within twice the seed spread**: the gap-closed fractions above are "
                       "dominated by noise; compare the AP50 values and their spreads instead.")
    return text


def fmt(v: Optional[float], digits: int = 1) -> str:
    """A number as the tables and the log print it; n/a for a missing one."""
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
            main = "n/a (0)"
        elif cell["std"] is None:
            main = f"{cell['mean']:.1f} (n={cell['n']})"
        else:
            main = f"{cell['mean']:.1f} ± {cell['std']:.1f} ({cell['n']})"
        per_seed = " / ".join(fmt(cell["values"].get(str(s))) if str(s) in cell["values"] else "–" for s in seeds)
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
                    parts += ["", f"{STUDENT_LABELS[method]} (not the reported model): AP50 {fmt(m)}"
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

