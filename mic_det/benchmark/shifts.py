"""The domain shifts of the accuracy benchmark, its methods, and the cctv_fog data.

A shift names what each method trains and is tested on, and where its configs are; the
method constants fix the table order and labels. The cctv_fog shift needs data no one
ships: a fogged copy of the CCTV fire/smoke set, rendered here once and stamped with its
settings and its source's listing, so that a changed fog setting or source set is
noticed instead of silently reused.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

from ..datagen.synthetic_shift import DUSK_VERSION
from .files import load_json, write_json

METHODS = ("source_only", "sada", "mic", "oracle")  # the default set
# Opt-in: MIC with mixed precision (SOLVER.AMP.ENABLED, bf16), to check that AMP costs no
# accuracy beyond the seed spread. Only shifts that have configs/bench/<shift>_mic_amp.yaml.
# Opt-in: MRT's options on top of MIC (docs/mrt.md), each alone and all three together.
# Only shifts that have configs/bench/<shift>_mic_{dt,sr,mr,mrt}.yaml.
MRT_METHODS = ("mic_dt", "mic_sr", "mic_mr", "mic_mrt")
# Opt-in: MIC with one setting changed, levers tried against a teacher whose pseudo-labels
# miss objects (on synthetic_dusk it finds about half of them): a lower pseudo-label
# threshold (0.6), and a shorter burn-in (300 of the 800 iterations, so 500 of adaptation).
# Only shifts that have configs/bench/<shift>_mic_{thr06,bi300}.yaml.
LEVER_METHODS = ("mic_thr06", "mic_bi300")
ALL_METHODS = ("source_only", "sada", "mic", "mic_amp", *MRT_METHODS, *LEVER_METHODS, "oracle")  # the table order
MIC_METHODS = ("mic", "mic_amp", *MRT_METHODS, *LEVER_METHODS)  # reported model: the EMA teacher
METHOD_LABELS = {
    "source_only": "source only",
    "sada": "SADA",
    "mic": "MIC (SADA + MIC), teacher",
    "mic_amp": "MIC, mixed precision (bf16), teacher",
    "mic_dt": "MIC + dynamic threshold (MRT), teacher",
    "mic_sr": "MIC + selective retraining (MRT), teacher",
    "mic_mr": "MIC + masked feature reconstruction (MRT), teacher",
    "mic_mrt": "MIC + all three MRT options, teacher",
    "mic_thr06": "MIC, pseudo-label threshold 0.6, teacher",
    "mic_bi300": "MIC, burn-in 300 (500 adaptation iterations), teacher",
    "oracle": "oracle (target labels)",
}
STUDENT_LABELS = {"mic": "MIC student", **{m: METHOD_LABELS[m].replace(", teacher", ", student")
                                           for m in MIC_METHODS if m != "mic"}}

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


@dataclass
class Shift:
    """One domain shift: the rows of its tables, and the configs its runs train."""

    name: str
    description: str
    train: str  # human-readable: what each method trains on
    methods: tuple = METHODS  # the methods this shift has configs for
    configs: Dict[str, str] = field(default_factory=dict)  # method -> config, relative to the repository root
    # The version of generated data whose style has changed over time; part of every run's
    # signature, so runs made on an earlier style are redone.
    data_version: Optional[dict] = None

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
    "synthetic_dusk": Shift(
        "synthetic_dusk",
        "embedded synthetic street scenes, clear -> dense fog at dusk under orange street light "
        "(mic_det.datagen.scenes, \"dusk\"); demo model (Base-Demo-R18-FPN.yaml, 160x320 input)",
        "source: synthetic_clear_train (labelled); target: synthetic_dusk_train (unlabelled; "
        "labelled for the oracle); test: synthetic_dusk_val",
        methods=(*METHODS[:-1], *MRT_METHODS, *LEVER_METHODS, "oracle"),
        data_version={"dusk_version": DUSK_VERSION},
    ),
    "cctv_fog": Shift(
        "cctv_fog",
        "CCTV fire/smoke frames, clear -> fogged copies (mic_det.datagen.fog, ground-plane prior); "
        "CPU model of smoke_fire/cpu_example_finetune.yaml (R18-FPN, 320 px input)",
        "source: cctv-fire-smoke train (clear, labelled); target: the same frames fogged "
        "(unlabelled; labelled for the oracle); test: fogged test (headline) and valid",
    ),
}


# =======================================================================================
# The cctv_fog data: fogged copies of the CCTV frames, generated once
# =======================================================================================
def fog_params_public(args) -> dict:
    return {"version": FOG_VERSION, "beta": args.fog_beta, "horizon": args.fog_horizon}


def _source_listing(cctv_root: str) -> dict:
    """Per split: number and total size of the images and of the label files (cheap: stat
    only), to notice a changed source set."""
    from ..datagen.fog import list_images

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
    from ..datagen import fog

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
    from ..datagen import fog

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
    write_json(stamp_path, {"params": params, "complete": False})
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
    write_json(stamp_path, {"params": params, "complete": True})
    log(f"cctv_fog: fogged copy written to {args.fog_root} in {time.time() - start:.0f} s")
    return state

