"""COCO evaluation (official pycocotools) with per-class AP50, the number domain
adaptation papers report, added to detectron2's results and logged as a table; and the
precision and recall of the detections that clear the pseudo-label threshold, which tell
what a teacher's pseudo-labels on these images would be worth."""
import logging
import math

import numpy as np
from detectron2.evaluation import COCOEvaluator
from tabulate import tabulate

logger = logging.getLogger(__name__)


def per_class_ap50(coco_eval, class_names):
    """{class name: AP at IoU 0.5 (101-point, all areas, maxDets 100) in percent}."""
    precision = coco_eval.eval["precision"]  # (iou, recall, class, area, max dets)
    iou_index = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
    out = {}
    for k, name in enumerate(class_names):
        p = precision[iou_index, :, k, 0, -1]
        p = p[p > -1]
        out[name] = float(np.mean(p) * 100) if p.size else float("nan")
    return out


def precision_recall_at(coco_eval, score_threshold: float, iou: float = 0.5):
    """(precision, recall) in percent of the detections scoring >= ``score_threshold``, as
    pycocotools matched them at this IoU (all areas, its largest maxDets); NaN where
    undefined (no such detection / no ground truth). pycocotools matches detections in
    score order, so the matches of the kept ones are those of the whole list."""
    params = coco_eval.params
    t = int(np.argmin(np.abs(params.iouThrs - iou)))
    area_all = params.areaRng[params.areaRngLbl.index("all")]
    tp = fp = num_gt = 0
    for e in coco_eval.evalImgs:
        if e is None or list(e["aRng"]) != list(area_all):
            continue
        num_gt += int(np.count_nonzero(~np.asarray(e["gtIgnore"], dtype=bool)))
        kept = np.asarray(e["dtScores"], dtype=float) >= score_threshold
        if not kept.any():
            continue
        matched = np.asarray(e["dtMatches"])[t] > 0
        counted = kept & ~np.asarray(e["dtIgnore"], dtype=bool)[t]  # matched to a crowd region: neither
        tp += int(np.count_nonzero(counted & matched))
        fp += int(np.count_nonzero(counted & ~matched))
    precision = 100.0 * tp / (tp + fp) if tp + fp else float("nan")
    recall = 100.0 * tp / num_gt if num_gt else float("nan")
    return precision, recall


class DomainAdaptationCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator on the official pycocotools path, adding ``AP50-<class>`` keys and,
    given ``score_threshold`` (the pseudo-label threshold), ``precision50@<thr>`` and
    ``recall50@<thr>``: how many of the detections above it are right at IoU 0.5, and how
    many objects they find. A teacher's pseudo-labels are those detections (less what the
    pseudo-labeller's own NMS and area ceiling drop; with MRT's dynamic threshold, the
    per-class thresholds are at least this one), so on a labelled target set these two say
    whether self-training is fed wrong boxes (precision) or taught that missed objects are
    background (recall)."""

    def __init__(self, dataset_name, output_dir=None, score_threshold=None, **kwargs):
        kwargs.setdefault("use_fast_impl", False)
        # never reuse a ground-truth json converted earlier: a changed class mapping
        # would silently be scored against the old one
        kwargs.setdefault("allow_cached_coco", False)
        kwargs.setdefault("tasks", ("bbox",))
        super().__init__(dataset_name, output_dir=output_dir, **kwargs)
        self.dataset_name = dataset_name
        self.score_threshold = score_threshold

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if coco_eval is None or not class_names:
            for name in class_names or []:
                results[f"AP50-{name}"] = float("nan")
            self._add_precision_recall(results, None)
            return results
        ap50 = per_class_ap50(coco_eval, class_names)
        results.update({f"AP50-{name}": v for name, v in ap50.items()})
        rows = [(name, f"{v:.1f}") for name, v in ap50.items()] + [("mean", f"{results['AP50']:.1f}")]
        logger.info(
            f"Per-class {iou_type} AP50 on {self.dataset_name}:\n"
            + tabulate(rows, headers=["class", "AP50"], tablefmt="pipe")
        )
        self._add_precision_recall(results, coco_eval)
        return results

    def _add_precision_recall(self, results, coco_eval):
        """``precision50@<thr>`` and ``recall50@<thr>`` into ``results`` (given a threshold);
        ``coco_eval`` None means no detection at all: nothing wrong, nothing found."""
        thr = self.score_threshold
        if thr is None:
            return
        if coco_eval is None:
            num_gt = sum(not a.get("iscrowd", 0) for a in self._coco_api.dataset.get("annotations", []))
            precision, recall = float("nan"), (0.0 if num_gt else float("nan"))
        else:
            precision, recall = precision_recall_at(coco_eval, thr)
            logger.info(
                f"Detections scoring >= {thr:g} (the pseudo-label threshold) on {self.dataset_name}, at IoU 0.5: "
                f"precision {precision:.1f} %, recall {recall:.1f} %. As a teacher's pseudo-labels, low precision "
                "feeds the student wrong boxes; low recall teaches it that the objects missed are background."
            )
        results[f"precision50@{thr:g}"], results[f"recall50@{thr:g}"] = precision, recall


def format_ap50_table(results) -> str:
    """A compact table of AP / AP50 / AP75 for results keyed like results.json."""
    rows = []
    for key, res in results.items():
        bbox = res.get("bbox", {})
        rows.append({"model/dataset": key, **{m: bbox.get(m, math.nan) for m in ("AP", "AP50", "AP75")}})
    if not rows:
        return "(no results)"
    return tabulate(
        [[r["model/dataset"], f"{r['AP']:.1f}", f"{r['AP50']:.1f}", f"{r['AP75']:.1f}"] for r in rows],
        headers=["model/dataset", "AP", "AP50", "AP75"],
        tablefmt="pipe",
    )


__all__ = ["DomainAdaptationCOCOEvaluator", "per_class_ap50", "precision_recall_at", "format_ap50_table"]
