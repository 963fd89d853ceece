"""Shared test helpers: a tiny from-scratch detector config, synthetic inputs, and a
datasets root holding the default synthetic shift for tests that run tools/ scripts."""
import os
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
# `make mutation` runs two test processes at once with OMP_NUM_THREADS=1: more threads
# than cores makes every test many times slower
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def tiny_cfg(sada=False, mic=False, num_classes=3):
    """A small R18-FPN Faster R-CNN that runs a step on CPU in well under a second."""
    from detectron2.config import get_cfg

    from mic_det import add_mic_config

    cfg = get_cfg()
    add_mic_config(cfg)
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), "..", "configs", "Base-DA-RCNN-FPN.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 64
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 100
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 100
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    cfg.MODEL.SADA.ENABLED = sada
    cfg.MODEL.SADA.IMG_HIDDEN_DIM = 16
    cfg.MODEL.SADA.INS_HIDDEN_DIM = 32
    cfg.MODEL.SADA.INS_PROPOSALS_PER_IMAGE = 32
    cfg.MIC.ENABLED = mic
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    cfg.INPUT.MAX_SIZE_TRAIN = 192
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.INPUT.MAX_SIZE_TEST = 192
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.IMS_PER_BATCH_TARGET = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small synthetic shift (8 train / 4 val images of 96x160 per domain) registered
    under the usual names for the module; the default registration is put back after."""
    from mic_det.data.synthetic import register_synthetic_shift

    root = str(tmp_path_factory.mktemp("synthetic"))
    register_synthetic_shift(root, image_size=(96, 160), num_train=8, num_val=4)
    yield root
    register_synthetic_shift(os.getenv("DETECTRON2_DATASETS", "datasets"))


@pytest.fixture
def register():
    """register(name, dicts, classes=the synthetic ones): a dataset for one test, removed
    afterwards, so that tests can run again in the same process (mutation testing does)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from mic_det.data.synthetic import SYNTHETIC_CLASSES

    names = []

    def _register(name, dicts, classes=SYNTHETIC_CLASSES):
        DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
        MetadataCatalog.get(name).thing_classes = list(classes)
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def da_cfg(out, sada=False, mic=False, max_iter=2, train=("synthetic_clear_train",), target=None):
    """``tiny_cfg`` training on the ``synthetic`` fixture's shift into ``out``: no test
    sets, no warm-up, every pseudo-label kept (an untrained teacher is never confident)."""
    cfg = tiny_cfg(sada=sada, mic=mic)
    cfg.DATASETS.TRAIN = train
    cfg.DATASETS.TRAIN_TARGET = target if target is not None else (("synthetic_foggy_train",) if sada or mic else ())
    cfg.DATASETS.TEST = ()
    cfg.MIC.PSEUDO_LABEL_THRESHOLD = 0.0
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.BASE_LR = 0.001
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.OUTPUT_DIR = str(out)
    return cfg


def make_inputs(n=2, height=96, width=160, with_instances=True, seed=0, num_classes=3):
    """detectron2 model inputs: random images with a few boxes each."""
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(n):
        image = torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)
        item = {"image": image, "height": height, "width": width}
        if with_instances:
            inst = Instances((height, width))
            x0 = torch.randint(0, width // 2, (3,), generator=g).float()
            y0 = torch.randint(0, height // 2, (3,), generator=g).float()
            inst.gt_boxes = Boxes(torch.stack([x0, y0, x0 + 30, y0 + 25], dim=1))
            inst.gt_classes = torch.randint(0, num_classes, (3,), generator=g)
            item["instances"] = inst
        inputs.append(item)
    return inputs


@pytest.fixture
def storage():
    from detectron2.utils.events import EventStorage

    with EventStorage(0) as s:
        yield s


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")

# The CCTV fire/smoke sample set's documented place (datasets/README.md). Where it is
# empty and the team's copy beside the repository exists, the copy is linked there, so
# the tests of the recipes and of the cctv_fog benchmark read it; else those tests skip.
CCTV = os.path.join(REPO, "datasets", "cctv-fire-smoke")
_TEAM_CCTV = os.path.join(REPO, "..", "shared", "data", "cctv-fire-smoke")
if not os.path.lexists(CCTV) and os.path.isdir(_TEAM_CCTV):
    os.symlink(os.path.realpath(_TEAM_CCTV), CCTV)
CCTV_SKIP_REASON = f"the CCTV fire/smoke set is not at {CCTV} (datasets/README.md says how to get it)"


@pytest.fixture(scope="session")
def tool_env(tmp_path_factory):
    """Environment for subprocesses: DETECTRON2_DATASETS at a root with the default
    synthetic shift (generated once per session, a few seconds)."""
    root = tmp_path_factory.mktemp("datasets")
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    subprocess.run([sys.executable, "-m", "mic_det.datagen.synthetic_shift", "--root", str(root)], env=env, check=True, capture_output=True)
    return env


@pytest.fixture(scope="session")
def tiny_mic_config(tmp_path_factory):
    """A YAML file: tiny SADA + MIC model on the synthetic shift, 3 iterations."""
    cfg = tiny_cfg(sada=True, mic=True)
    cfg.DATASETS.TRAIN = ("synthetic_clear_train",)
    cfg.DATASETS.TRAIN_TARGET = ("synthetic_foggy_train",)
    cfg.DATASETS.TEST = ("synthetic_foggy_val",)
    cfg.MIC.PSEUDO_LABEL_THRESHOLD = 0.0  # an untrained teacher is never confident
    cfg.TEST.EVAL_MODEL = "both"
    cfg.SOLVER.MAX_ITER = 3
    cfg.SOLVER.BASE_LR = 0.001
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    cfg.SEED = 7
    path = tmp_path_factory.mktemp("cfg") / "tiny_mic.yaml"
    path.write_text(cfg.dump())
    return str(path)


def run_train_net(args, env, **kwargs):
    return subprocess.run([sys.executable, TRAIN_NET, *args], env=env, capture_output=True, text=True, timeout=600, **kwargs)
