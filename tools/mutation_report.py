#!/usr/bin/env python
"""Summarise the last `mutmut run` (see docs/mutation_testing.md).

    python tools/mutation_report.py [--json FILE]

Prints, per module and in total, how many mutants the tests killed; then every
surviving mutant that docs/mutation_survivors.txt does not explain, with its diff, and
the entries of that file that no longer survive. Exits with 1 if a survivor is
unexplained, so that `make mutation` fails until each one is killed by a test or
explained there.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SURVIVORS_FILE = os.path.join(REPO, "docs", "mutation_survivors.txt")
# "check was interrupted by user": the mutant made the tests raise KeyboardInterrupt (the
# preemption hook's Ctrl-C handler raising on the first signal), which stops the test run
# instead of passing it: detected.
DETECTED = {"killed", "timeout", "segfault", "caught by type check", "check was interrupted by user"}


def mutmut(*args) -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "mutmut")
    return subprocess.run([exe, *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def read_results():
    """{mutant name: status} of every mutant of the last run."""
    results = {}
    for line in mutmut("results", "--all", "true").splitlines():
        m = re.match(r"\s+(\S+): (.+)$", line)
        if m:
            results[m.group(1)] = m.group(2).strip()
    if not results:
        sys.exit("No mutation results: run `make mutation` (or `mutmut run`) first.")
    return results


def module_of(mutant: str) -> str:
    """mic_det.modeling.sada.xǁSADAHeadsǁforward__mutmut_3 -> mic_det/modeling/sada.py"""
    return re.split(r"\.x[ǁ_]", mutant, maxsplit=1)[0].replace(".", "/") + ".py"


def read_explained():
    """{mutant name: reason} from docs/mutation_survivors.txt ('name  # reason' lines)."""
    explained = {}
    if os.path.exists(SURVIVORS_FILE):
        for line in open(SURVIVORS_FILE, encoding="utf-8"):
            name, _, reason = line.partition("#")
            if name.strip():
                explained[name.strip()] = reason.strip()
    return explained


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    results = read_results()
    by_module = collections.defaultdict(collections.Counter)
    for name, status in results.items():
        by_module[module_of(name)][status] += 1

    rows = []
    for module in sorted(by_module) + ["total"]:
        counts = sum(by_module.values(), collections.Counter()) if module == "total" else by_module[module]
        total = sum(counts.values())
        detected = sum(counts[s] for s in DETECTED)
        rows.append((module, total, detected, counts["survived"], counts["no tests"], 100.0 * detected / total))
    width = max(len(r[0]) for r in rows)
    print(f"{'module':<{width}}  mutants  killed  survived  no tests  kill rate")
    for module, total, detected, survived, untested, rate in rows:
        print(f"{module:<{width}}  {total:7d}  {detected:6d}  {survived:8d}  {untested:8d}  {rate:8.1f} %")

    explained = read_explained()
    survivors = sorted(n for n, s in results.items() if s not in DETECTED)
    unexplained = [n for n in survivors if n not in explained]
    stale = sorted(n for n in explained if results.get(n) in DETECTED or n not in results)
    print(f"\n{len(survivors)} survivors: {len(survivors) - len(unexplained)} explained in "
          f"{os.path.relpath(SURVIVORS_FILE, REPO)}, {len(unexplained)} not.")
    for name in unexplained:
        print(f"\n--- {name} ({results[name]})")
        print(mutmut("show", name).strip())
    if stale:
        print(f"\nNo longer surviving (remove from {os.path.relpath(SURVIVORS_FILE, REPO)}):")
        for name in stale:
            print(f"  {name}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"modules": {r[0]: dict(zip(("mutants", "killed", "survived", "no_tests", "kill_rate"), r[1:])) for r in rows},
                       "unexplained": unexplained}, f, indent=1)
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
