from .coco_evaluation import DomainAdaptationCOCOEvaluator, format_ap50_table, per_class_ap50, precision_recall_at
from .results_file import write_results_json

__all__ = ["DomainAdaptationCOCOEvaluator", "format_ap50_table", "per_class_ap50", "precision_recall_at", "write_results_json"]
