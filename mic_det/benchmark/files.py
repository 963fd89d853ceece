"""The files of the accuracy benchmark, and how they are read and written.

Their own module because every stage uses them: the plan decides on reuse from a run's
``bench_run.json`` and ``results.json``, the cctv_fog preparation stamps its copy, the
report writes and copies them. Written atomically: a benchmark killed mid-write leaves
the previous file (or none), never half of one that a resumed benchmark would trust.
"""
import json

from ..utils.io import atomic_write

SPEC_FILE = "bench_run.json"  # what the benchmark ran in a run folder, to decide on reuse
RESULTS_FILE = "results.json"
REPORT_JSON, REPORT_MD, REPORT_PNG = "accuracy.json", "accuracy.md", "accuracy.png"  # in --output-dir


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


def write_json(path: str, data) -> None:
    with atomic_write(path) as f:
        json.dump(data, f, indent=2)
