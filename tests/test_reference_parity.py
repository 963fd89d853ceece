"""docs/reference_parity.md against the configs: every value that page claims for
cs2foggy_mic.yaml and cs2foggy_mic_reference.yaml is what those files (with their
_BASE_s and mic_det's defaults) give."""
import ast
import math
import os
import re

import pytest
from detectron2.config import get_cfg

from mic_det import add_mic_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(REPO, "docs", "reference_parity.md")
CONFIGS = ("cs2foggy_mic.yaml", "cs2foggy_mic_reference.yaml")


def table_rows():
    """(key, {config file: claimed value}) for every row of the page with a config key."""
    rows = []
    for line in open(PAGE, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or not re.fullmatch(r"`[A-Z0-9_.]+`", cells[1]):
            continue
        claims = {}
        for name, cell in zip(CONFIGS, cells[4:6]):
            m = re.fullmatch(r"`(.+)`", cell)
            assert m, f"{cells[1]}: the {name} column must hold one value in backticks, got {cell!r}"
            claims[name] = ast.literal_eval(m.group(1))
        rows.append((cells[1].strip("`"), claims))
    return rows


def load(name):
    cfg = get_cfg()
    add_mic_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", name))
    return cfg


def lookup(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


ROWS = table_rows()


def test_the_page_covers_the_settings_that_matter():
    keys = {k for k, _ in ROWS}
    assert len(ROWS) >= 70
    for key in ("SOLVER.BIAS_LR_FACTOR", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "MIC.QUALITY_WEIGHT",
                "MODEL.SADA.INS_INIT_STD", "MODEL.RPN.BOUNDARY_THRESH", "TEACHER.EMA_ALPHA", "MIC.BLUR_PROB"):
        assert key in keys, key


@pytest.mark.parametrize("name", CONFIGS)
def test_each_claimed_value_is_the_configs(name):
    cfg = load(name)
    wrong = [(key, claims[name], lookup(cfg, key)) for key, claims in ROWS if not same(claims[name], lookup(cfg, key))]
    assert not wrong, f"{name} differs from docs/reference_parity.md: {wrong}"


def test_the_two_configs_differ_only_where_the_page_says_why():
    page = open(PAGE, encoding="utf-8").read()
    a, b = (load(n) for n in CONFIGS)
    for key, claims in ROWS:
        if not same(claims[CONFIGS[0]], claims[CONFIGS[1]]):
            row = next(line for line in page.splitlines() if f"| `{key}` |" in line)
            assert row.rstrip().rstrip("|").split("|")[-1].strip(), f"{key}: the configs differ but the page says not why"
    differing = set()

    def walk(x, y, prefix=""):
        for k in x:
            if hasattr(x[k], "keys"):
                walk(x[k], y[k], f"{prefix}{k}.")
            elif not same(x[k], y[k]):
                differing.add(f"{prefix}{k}")

    walk(a, b)
    assert differing - {k for k, _ in ROWS} == {"OUTPUT_DIR"}, "the configs differ where the page has no row"
