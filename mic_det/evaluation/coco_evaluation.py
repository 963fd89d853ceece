"""COCO evaluation (official pycocotools) with per-class AP50, the number domain
adaptation papers report, added to detectron2's results and logged as a table."""
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


class DomainAdaptationCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator on the official pycocotools path, adding ``AP50-<class>`` keys."""

    def __init__(self, dataset_name, output_dir=None, **kwargs):
        kwargs.setdefault("use_fast_impl", False)
        # never reuse a ground-truth json converted earlier: a changed class mapping
        # would silently be scored against the old one
        kwargs.setdefault("allow_cached_coco", False)
        kwargs.setdefault("tasks", ("bbox",))
        super().__init__(dataset_name, output_dir=output_dir, **kwargs)
        self.dataset_name = dataset_name

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if coco_eval is None or not class_names:
            for name in class_names or []:
                results[f"AP50-{name}"] = float("nan")
            return results
        ap50 = per_class_ap50(coco_eval, class_names)
        results.update({f"AP50-{name}": v for name, v in ap50.items()})
        rows = [(name, f"{v:.1f}") for name, v in ap50.items()] + [("mean", f"{results['AP50']:.1f}")]
        logger.info(
            f"Per-class {iou_type} AP50 on {self.dataset_name}:\n"
            + tabulate(rows, headers=["class", "AP50"], tablefmt="pipe")
        )
        return results


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


__all__ = ["DomainAdaptationCOCOEvaluator", "per_class_ap50", "format_ap50_table"]
