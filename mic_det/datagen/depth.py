"""Distance maps for rendering fog (mic_det/datagen/fog.py): metres from the camera for
every pixel, from Cityscapes' stereo disparity and camera calibration (holes filled
along rows, the sky put far away), or, for images without depth, from a flat-ground
prior."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

# Cityscapes' stereo and calibration files (disparity_trainvaltest.zip, camera_trainvaltest.zip),
# unpacked next to leftImg8bit/ under <root>/cityscapes/.
DISPARITY_DIR = "disparity"  # <root>/cityscapes/disparity/{split}/{city}/{base}_disparity.png
CAMERA_DIR = "camera"  # <root>/cityscapes/camera/{split}/{city}/{base}_camera.json
DISPARITY_SUFFIX = "_disparity.png"
CAMERA_SUFFIX = "_camera.json"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"  # optional: its sky pixels are put at max_distance
DEFAULT_MAX_DISTANCE = 1000.0  # m; sky and disparity 0. exp(-0.005 * 1000) = 0.0067
DEFAULT_MEDIAN = 5  # px, median filter of the completed distance map (0 / 1: off)
DEFAULT_HORIZON = 0.45  # ground-plane prior: horizon row as a fraction of the height
DEFAULT_NEAR_DISTANCE = 3.0  # m, ground-plane prior: distance at the bottom row


# ---------------------------------------------------------------------------------------
# Distance from Cityscapes stereo.
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Camera:
    """The parts of a Cityscapes ``*_camera.json`` that fog needs (metres, pixels)."""

    baseline: float
    fx: float
    fy: float
    u0: float
    v0: float

    @classmethod
    def from_json(cls, data: dict) -> "Camera":
        try:
            ext, intr = data["extrinsic"], data["intrinsic"]
            return cls(float(ext["baseline"]), float(intr["fx"]), float(intr["fy"]),
                       float(intr["u0"]), float(intr["v0"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"camera json lacks extrinsic.baseline or intrinsic.fx/fy/u0/v0 ({e!r})")


def read_camera(path: str) -> Camera:
    with open(path) as f:
        try:
            return Camera.from_json(json.load(f))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def read_disparity(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """A Cityscapes 16-bit disparity PNG -> ``(disparity in px, float32; valid mask)``.
    ``p = 0`` is invalid (disparity set to 0 there); otherwise ``d = (p - 1) / 256``."""
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise FileNotFoundError(f"cannot read disparity PNG {path}")
    if raw.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel 16-bit disparity PNG, got shape {raw.shape}")
    raw = raw.astype(np.float32)
    valid = raw > 0
    disparity = np.where(valid, (raw - 1.0) / 256.0, 0.0).astype(np.float32)
    return disparity, valid


def ray_factor(height: int, width: int, camera: Camera) -> np.ndarray:
    """``sqrt(1 + ((u - u0)/fx)^2 + ((v - v0)/fy)^2)``: distance / depth at each pixel."""
    u = (np.arange(width, dtype=np.float64) - camera.u0) / camera.fx
    v = (np.arange(height, dtype=np.float64) - camera.v0) / camera.fy
    return np.sqrt(1.0 + u[None, :] ** 2 + v[:, None] ** 2).astype(np.float32)


def cityscapes_distance(
    disparity: np.ndarray, valid: np.ndarray, camera: Camera, max_distance: float = DEFAULT_MAX_DISTANCE
) -> np.ndarray:
    """Distance from the camera centre (m) at valid pixels, NaN elsewhere, at most
    ``max_distance`` (a zero disparity is infinitely far, hence ``max_distance``)."""
    height, width = disparity.shape
    with np.errstate(divide="ignore"):
        depth = np.where(disparity > 0, camera.baseline * camera.fx / np.maximum(disparity, 1e-12), np.inf)
    dist = np.minimum(depth * ray_factor(height, width, camera), max_distance).astype(np.float32)
    return np.where(valid, dist, np.nan).astype(np.float32)


def _nearest_along_rows(values: np.ndarray, known: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every pixel, the value of the nearest known pixel to its left and to its right in
    the same row (NaN where there is none) and whether that neighbour exists."""
    height, width = values.shape
    cols = np.arange(width)[None, :]
    left_idx = np.maximum.accumulate(np.where(known, cols, -1), axis=1)
    right_idx = np.minimum.accumulate(np.where(known, cols, width)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(height)[:, None]
    has_left, has_right = left_idx >= 0, right_idx < width
    left = np.where(has_left, values[rows, np.clip(left_idx, 0, width - 1)], np.nan)
    right = np.where(has_right, values[rows, np.clip(right_idx, 0, width - 1)], np.nan)
    return left, right, has_left, has_right


def top_runs(invalid: np.ndarray) -> np.ndarray:
    """Invalid pixels reached from the top border going straight down through invalid
    pixels only, in columns that have at least one valid pixel (the sky heuristic)."""
    run = np.logical_and.accumulate(invalid, axis=0)
    return run & ~invalid.all(axis=0, keepdims=True)


def fill_distance(
    distance: np.ndarray,
    sky: Optional[np.ndarray] = None,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    median: int = DEFAULT_MEDIAN,
) -> np.ndarray:
    """Complete a distance map whose missing pixels are NaN. Rules, in order:

    1. sky: the ``sky`` mask when given (e.g. gtFine label "sky"), otherwise the heuristic
       :func:`top_runs` (missing pixels connected straight up to the top border) -> ``max_distance``;
    2. other holes, row by row: the *farther* of the nearest known pixels to the left and
       to the right (stereo holes are mostly occlusions, which belong to the background;
       a hole inside one surface gets that surface's distance); a hole touching the left
       or right border takes its single neighbour (Cityscapes' left band without stereo);
    3. rows with nothing known: the same along columns; an empty map: ``max_distance``;
    4. a ``median`` x ``median`` median filter (3 or 5; 0 or 1: off) against stereo speckle.
    """
    dist = np.asarray(distance, np.float32).copy()
    known = np.isfinite(dist)
    if sky is None:
        sky = top_runs(~known)
    dist[sky] = max_distance
    known |= sky
    if not known.any():
        return np.full(dist.shape, max_distance, np.float32)
    if not known.all():
        left, right, has_left, has_right = _nearest_along_rows(dist, known)
        fill = np.where(has_left & has_right, np.fmax(left, right), np.where(has_left, left, right))
        dist = np.where(known, dist, fill)
        known = np.isfinite(dist)
        if not known.all():  # whole rows without a known pixel: fill along columns
            up, down, has_up, has_down = _nearest_along_rows(dist.T, known.T)
            fill = np.where(has_up & has_down, np.fmax(up, down), np.where(has_up, up, down)).T
            dist = np.where(known, dist, fill)
    dist = np.minimum(dist, max_distance).astype(np.float32)
    if median and median > 1:
        if median not in (3, 5):
            raise ValueError(f"median must be 0, 1, 3 or 5 (OpenCV's float median), got {median}")
        dist = cv2.medianBlur(dist, median)
    return dist


def sky_from_label_ids(path: str) -> Optional[np.ndarray]:
    """The sky mask of a gtFine ``*_labelIds.png``; None when the file does not exist or
    holds a single label everywhere (the placeholders of the test split)."""
    if not os.path.isfile(path):
        return None
    from cityscapesscripts.helpers.labels import name2label

    ids = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if ids is None or ids.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel gtFine labelIds PNG")
    if (ids == ids.flat[0]).all():
        return None
    return ids == name2label["sky"].id


# ---------------------------------------------------------------------------------------
# Distance prior for images without depth.
# ---------------------------------------------------------------------------------------
def ground_plane_distance(
    height: int,
    width: int,
    horizon: float = DEFAULT_HORIZON,
    near_distance: float = DEFAULT_NEAR_DISTANCE,
    max_distance: float = DEFAULT_MAX_DISTANCE,
) -> np.ndarray:
    """Distance (m) of a flat ground seen by a level pinhole camera, as a prior.

    ``horizon`` is the horizon row as a fraction of the image height from the top (0: top
    row, 1: bottom row; negative: above the image, for cameras tilted down). On a flat
    ground, distance is inversely proportional to the number of rows below the horizon,
    so row ``v`` gets ``near_distance * (H - 1 - h) / (v - h)`` (``near_distance`` at the
    bottom row), clipped to ``max_distance``; rows at or above the horizon get
    ``max_distance``. Constant along each row.

    A prior, not a measurement: anything standing up (people, vehicles, walls, smoke)
    takes the distance of the ground behind it, so its top is fogged like the far ground
    at that row; indoor scenes, ceilings and skies are only roughly right.
    """
    if not (horizon < 1.0):
        raise ValueError(f"horizon must be < 1 (a fraction of the height from the top), got {horizon}")
    if near_distance <= 0 or max_distance <= 0:
        raise ValueError("near_distance and max_distance must be positive")
    h = horizon * (height - 1)
    rows = np.arange(height, dtype=np.float64)
    below = rows - h
    with np.errstate(divide="ignore"):
        d = np.where(below > 0, near_distance * (height - 1 - h) / np.maximum(below, 1e-12), np.inf)
    d = np.minimum(d, max_distance).astype(np.float32)
    return np.repeat(d[:, None], width, axis=1)
