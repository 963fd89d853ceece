"""OUTPUT_DIR/results.json: the final evaluation, in the layout outside tools rely on:
``{key: {"bbox": {"AP": .., "AP50": .., "AP75": .., "AP50-<class>": ..}}}`` where key is
the dataset name, or ``teacher/<dataset>`` and ``student/<dataset>`` when both models
are evaluated."""
import json
import math
import os

from detectron2.utils.file_io import PathManager

from ..utils.io import atomic_write


def _clean(value):
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; "no value" is what it means here
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def write_results_json(results, output_dir: str, filename: str = "results.json") -> str:
    """Write ``results`` atomically (temp file + rename) and return the path."""
    PathManager.mkdirs(output_dir)
    path = os.path.join(output_dir, filename)
    with atomic_write(path) as f:
        json.dump(_clean(dict(results)), f, indent=2, sort_keys=True)
    return path
