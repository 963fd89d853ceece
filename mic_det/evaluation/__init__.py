from .coco_evaluation import DomainAdaptationCOCOEvaluator, format_ap50_table, per_class_ap50
from .results_file import write_results_json

__all__ = ["DomainAdaptationCOCOEvaluator", "format_ap50_table", "per_class_ap50", "write_results_json"]
