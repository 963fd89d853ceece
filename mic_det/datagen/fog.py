"""Synthetic fog: render Foggy Cityscapes-style images from clear ones.

The optical model is the standard homogeneous-fog (Koschmieder) model that Foggy
Cityscapes uses (Sakaridis, Dai, Van Gool, IJCV 2018)::

    I(x) = R(x) * t(x) + L * (1 - t(x)),      t(x) = exp(-beta * l(x))

``R`` is the clear image (values in [0, 1], sRGB as stored, no linearisation), ``L`` the
atmospheric light (one value per channel, constant over the image), ``beta`` the
attenuation coefficient in 1/m (Foggy Cityscapes: 0.005, 0.01, 0.02, i.e. a
meteorological visibility of about 600, 300 and 150 m) and ``l(x)`` the distance in
metres from the camera centre to the scene point seen at pixel x.

Two sources of ``l``:

* **Cityscapes stereo** (:func:`cityscapes_distance`): the ``disparity`` PNG and
  ``camera`` JSON shipped with Cityscapes. Disparity ``d = (p - 1) / 256`` for a PNG
  value ``p > 0`` (``p = 0``: no measurement); depth ``Z = baseline * fx / d`` (``d = 0``:
  infinitely far); distance along the pixel's ray
  ``l = Z * sqrt(1 + ((u - u0) / fx)^2 + ((v - v0) / fy)^2)``, clipped to ``max_distance``.
  Pixels without a measurement are filled by :func:`fill_distance` (see there); the
  published Foggy Cityscapes used a more elaborate completion (superpixel-wise plane
  fitting), so our fog differs from theirs in the holes.
* **A ground-plane prior** (:func:`ground_plane_distance`) for images without depth.

Then ``t`` is optionally refined with a guided filter (He et al., 2010) whose guide is
the clear colour image: depth edges that coincide with image edges stay sharp, stereo
noise and hole-filling seams that do not are smoothed out. (A grey guide was tried
first: it left visible halos along edges between colours of similar brightness, e.g.
a beige facade against a blue sky. Foggy Cityscapes itself used a dual-range
cross-bilateral filter guided by colour and semantic labels.)

Atmospheric light: by default estimated per image like He et al.'s dark-channel prior
(the colour averaged over the 0.1 % of pixels with the brightest dark channel, a 15 px
minimum filter over the per-pixel channel minimum), or a fixed value.

Everything is vectorised numpy / OpenCV and deterministic (no randomness at all).
The command-line front end is ``datasets/make_foggy.py``.
"""
from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from multiprocessing import Pool
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..data.cityscapes import (
    CITYSCAPES_DIR,
    FOGGY_DIR,
    FOGGY_IMAGE_DIR,
    FOGGY_IMAGE_SUFFIX,
    GT_DIR,
    IMAGE_DIR,
    IMAGE_SUFFIX,
    SPLITS,
)
from ..utils import io
from ..utils.io import IMAGE_EXTENSIONS, atomic_write

logger = logging.getLogger(__name__)

# Cityscapes' stereo and calibration files (disparity_trainvaltest.zip, camera_trainvaltest.zip),
# unpacked next to leftImg8bit/ under <root>/cityscapes/.
DISPARITY_DIR = "disparity"  # <root>/cityscapes/disparity/{split}/{city}/{base}_disparity.png
CAMERA_DIR = "camera"  # <root>/cityscapes/camera/{split}/{city}/{base}_camera.json
DISPARITY_SUFFIX = "_disparity.png"
CAMERA_SUFFIX = "_camera.json"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"  # optional: its sky pixels are put at max_distance

DEFAULT_BETAS = (0.005, 0.01, 0.02)
DEFAULT_MAX_DISTANCE = 1000.0  # m; sky and disparity 0. exp(-0.005 * 1000) = 0.0067
DEFAULT_MEDIAN = 5  # px, median filter of the completed distance map (0 / 1: off)
DEFAULT_GUIDED_RADIUS = 8  # px, guided filter of t (0: off); a 17 x 17 window at 2048 x 1024
DEFAULT_GUIDED_EPS = 1e-4  # guided filter regulariser (colour guide and t in [0, 1])
DEFAULT_HORIZON = 0.45  # ground-plane prior: horizon row as a fraction of the height
DEFAULT_NEAR_DISTANCE = 3.0  # m, ground-plane prior: distance at the bottom row
DARK_CHANNEL_PATCH = 15  # px
AIRLIGHT_TOP_FRACTION = 0.001  # the brightest 0.1 % of the dark channel

AtmosphericLight = Union[None, str, float, Sequence[float]]


# ---------------------------------------------------------------------------------------
# Names.
# ---------------------------------------------------------------------------------------
def format_beta(beta: Union[float, str]) -> str:
    """The beta as Foggy Cityscapes writes it in file names: 0.005 -> "0.005", 0.01 -> "0.01"."""
    value = float(beta)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    return f"{value:g}"


def foggy_file_name(base: str, beta: Union[float, str]) -> str:
    """``{city}_{seq}_{frame}`` -> ``{city}_{seq}_{frame}_leftImg8bit_foggy_beta_{beta}.png``."""
    return base + FOGGY_IMAGE_SUFFIX.format(beta=format_beta(beta))


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


# ---------------------------------------------------------------------------------------
# Fog.
# ---------------------------------------------------------------------------------------
def transmittance(distance: np.ndarray, beta: float) -> np.ndarray:
    """``exp(-beta * distance)``, float32."""
    return np.exp(-float(beta) * np.asarray(distance, np.float64)).astype(np.float32)


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    k = 2 * radius + 1
    return cv2.boxFilter(x, cv2.CV_32F, (k, k), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter: ``src`` (H x W) is fitted in every (2r+1)^2 window by an
    affine function of the ``guide`` (H x W single-channel, or H x W x 3 colour: edges
    between different colours of equal brightness are kept too), ``eps`` the regulariser;
    the fits are averaged. On a constant guide it is a box filter; ``radius <= 0`` returns
    ``src`` unchanged."""
    src = np.asarray(src, np.float32)
    if radius <= 0:
        return src.copy()
    guide = np.asarray(guide, np.float32)
    mean_p = _box(src, radius)
    if guide.ndim == 2:
        mean_i = _box(guide, radius)
        var_i = np.maximum(_box(guide * guide, radius) - mean_i * mean_i, 0.0)
        a = (_box(guide * src, radius) - mean_i * mean_p) / (var_i + eps)
        b = mean_p - a * mean_i
        return _box(a, radius) * guide + _box(b, radius)
    chans = [guide[..., c] for c in range(guide.shape[2])]
    if len(chans) != 3:
        raise ValueError(f"a colour guide must have 3 channels, got {len(chans)}")
    mean = [_box(c, radius) for c in chans]
    cov_p = [_box(c * src, radius) - m * mean_p for c, m in zip(chans, mean)]

    def sig(i, j):
        return _box(chans[i] * chans[j], radius) - mean[i] * mean[j] + (eps if i == j else 0.0)

    s00, s01, s02, s11, s12, s22 = sig(0, 0), sig(0, 1), sig(0, 2), sig(1, 1), sig(1, 2), sig(2, 2)
    # a = (Sigma + eps I)^-1 cov_p, with the symmetric 3 x 3 inverse written out (adjugate / det)
    c00, c01, c02 = s11 * s22 - s12 * s12, s02 * s12 - s01 * s22, s01 * s12 - s02 * s11
    c11, c12, c22 = s00 * s22 - s02 * s02, s01 * s02 - s00 * s12, s00 * s11 - s01 * s01
    det = s00 * c00 + s01 * c01 + s02 * c02
    a0 = (c00 * cov_p[0] + c01 * cov_p[1] + c02 * cov_p[2]) / det
    a1 = (c01 * cov_p[0] + c11 * cov_p[1] + c12 * cov_p[2]) / det
    a2 = (c02 * cov_p[0] + c12 * cov_p[1] + c22 * cov_p[2]) / det
    b = mean_p - a0 * mean[0] - a1 * mean[1] - a2 * mean[2]
    return _box(a0, radius) * chans[0] + _box(a1, radius) * chans[1] + _box(a2, radius) * chans[2] + _box(b, radius)


def _as_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    return image.astype(np.float32)


def dark_channel(image: np.ndarray, patch: int = DARK_CHANNEL_PATCH) -> np.ndarray:
    """Per-pixel minimum over the channels, then a ``patch`` x ``patch`` minimum filter."""
    img = _as_float(image)
    mins = img.min(axis=2) if img.ndim == 3 else img
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    return cv2.erode(mins, kernel, borderType=cv2.BORDER_REPLICATE)


def estimate_atmospheric_light(
    image: np.ndarray, patch: int = DARK_CHANNEL_PATCH, top_fraction: float = AIRLIGHT_TOP_FRACTION
) -> np.ndarray:
    """Atmospheric light in the image's channel order, values in [0, 1]: the mean colour
    of the ``top_fraction`` pixels with the brightest dark channel (He et al.'s rule,
    averaged rather than taking the single brightest of them, for stability)."""
    img = _as_float(image)
    dark = dark_channel(img, patch).ravel()
    n = max(1, int(round(top_fraction * dark.size)))
    idx = np.argpartition(-dark, n - 1)[:n]
    pixels = img.reshape(-1, img.shape[2] if img.ndim == 3 else 1)[idx]
    return pixels.mean(axis=0).astype(np.float32)


def resolve_atmospheric_light(image: np.ndarray, atmospheric_light: AtmosphericLight) -> np.ndarray:
    """``None`` / ``"auto"``: :func:`estimate_atmospheric_light`; a number: that grey value;
    a sequence: one value per channel, in the image's channel order."""
    channels = image.shape[2] if image.ndim == 3 else 1
    if atmospheric_light is None or (isinstance(atmospheric_light, str) and atmospheric_light == "auto"):
        return estimate_atmospheric_light(image)
    light = np.asarray(atmospheric_light, np.float32).reshape(-1)
    if light.size == 1:
        light = np.repeat(light, channels)
    if light.size != channels:
        raise ValueError(f"atmospheric light has {light.size} values for a {channels}-channel image")
    return light


def render_fog(
    image: np.ndarray,
    distance: np.ndarray,
    beta: float,
    atmospheric_light: AtmosphericLight = None,
    guided_radius: int = DEFAULT_GUIDED_RADIUS,
    guided_eps: float = DEFAULT_GUIDED_EPS,
) -> Tuple[np.ndarray, np.ndarray]:
    """Fog ``image`` (H x W x C, uint8 / uint16 / float in [0, 1]) with distances ``distance``
    (H x W, metres, finite). Returns ``(foggy image of the input dtype, transmittance t)``.

    ``t = exp(-beta * distance)``, refined by :func:`guided_filter` with the image itself
    (colour) as guide (``guided_radius`` 0: no refinement), clipped to [0, 1].
    ``atmospheric_light``: see :func:`resolve_atmospheric_light` (values in [0, 1]).
    """
    if image.shape[:2] != distance.shape:
        raise ValueError(f"image is {image.shape[:2]} but the distance map is {distance.shape}")
    if not np.isfinite(distance).all():
        raise ValueError("the distance map has NaN or infinite values: fill it first (fill_distance)")
    img = _as_float(image)
    t = transmittance(distance, beta)
    if guided_radius and guided_radius > 0:
        guide = img if img.ndim == 2 or img.shape[2] == 3 else img.mean(axis=2)
        t = np.clip(guided_filter(guide, t, guided_radius, guided_eps), 0.0, 1.0)
    light = resolve_atmospheric_light(img, atmospheric_light)
    t3 = t[..., None] if img.ndim == 3 else t
    foggy = img * t3 + light * (1.0 - t3) if img.ndim == 3 else img * t + light[0] * (1.0 - t)
    return _to_dtype(foggy, image.dtype), t


def _to_dtype(img: np.ndarray, dtype) -> np.ndarray:
    if dtype == np.uint8:
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.clip(np.rint(img * 65535.0), 0, 65535).astype(np.uint16)
    return img.astype(dtype)


# ---------------------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------------------
def read_image(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return img


def write_image(path: str, image: np.ndarray) -> None:
    """Write atomically (a temporary file, then a rename): an interrupted run never leaves a
    truncated image behind under the final name. JPEG at quality 95."""
    ext = os.path.splitext(path)[1].lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f"cannot encode {path}")
    with atomic_write(path, "wb", fsync=False) as f:  # thousands of images, each re-renderable
        f.write(buf.tobytes())


@dataclass(frozen=True)
class FogOptions:
    atmospheric_light: AtmosphericLight = None  # None / "auto": per-image estimate
    max_distance: float = DEFAULT_MAX_DISTANCE
    median: int = DEFAULT_MEDIAN
    guided_radius: Optional[int] = None  # None: DEFAULT_GUIDED_RADIUS for Cityscapes, 0 for the prior
    guided_eps: float = DEFAULT_GUIDED_EPS
    use_sky_labels: bool = True  # Cityscapes: gtFine *_labelIds.png sky -> max_distance
    horizon: float = DEFAULT_HORIZON  # folder mode
    near_distance: float = DEFAULT_NEAR_DISTANCE  # folder mode


@dataclass(frozen=True)
class CityscapesFrame:
    split: str
    city: str
    base: str  # {city}_{seq}_{frame}
    image: str
    disparity: str
    camera: str
    label_ids: str


def list_cityscapes_frames(root: str, splits: Sequence[str] = SPLITS) -> List[CityscapesFrame]:
    """Every ``cityscapes/leftImg8bit/{split}/{city}/*_leftImg8bit.png`` of ``splits``, with
    the paths of its disparity, camera and (optional) labelIds files. Raises
    FileNotFoundError naming the first missing folder, image set or stereo file."""
    cs_root = os.path.join(root, CITYSCAPES_DIR)
    frames: List[CityscapesFrame] = []
    for split in splits:
        image_dir = os.path.join(cs_root, IMAGE_DIR, split)
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(
                f"Cityscapes images not found: {os.path.abspath(image_dir)} (see datasets/README.md)")
        images = sorted(glob.glob(os.path.join(image_dir, "*", "*" + IMAGE_SUFFIX)))
        if not images:
            raise FileNotFoundError(
                f"no {{city}}/*{IMAGE_SUFFIX} images in {os.path.abspath(image_dir)} (see datasets/README.md)")
        for path in images:
            city = os.path.basename(os.path.dirname(path))
            base = os.path.basename(path)[: -len(IMAGE_SUFFIX)]
            frames.append(CityscapesFrame(
                split, city, base, path,
                os.path.join(cs_root, DISPARITY_DIR, split, city, base + DISPARITY_SUFFIX),
                os.path.join(cs_root, CAMERA_DIR, split, city, base + CAMERA_SUFFIX),
                os.path.join(cs_root, GT_DIR, split, city, base + LABEL_IDS_SUFFIX),
            ))
    for kind in ("disparity", "camera"):
        missing = [getattr(f, kind) for f in frames if not os.path.isfile(getattr(f, kind))]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(frames)} frames have no {kind} file, e.g. {os.path.abspath(missing[0])} . "
                f"Unpack Cityscapes' {kind}_trainvaltest.zip into {os.path.abspath(cs_root)}/ "
                f"(so that {kind}/{{split}}/{{city}}/ exists); see datasets/README.md."
            )
    return frames


def foggy_output_path(root: str, frame: CityscapesFrame, beta: Union[float, str]) -> str:
    return os.path.join(root, FOGGY_DIR, FOGGY_IMAGE_DIR, frame.split, frame.city, foggy_file_name(frame.base, beta))


def frame_distance(frame: CityscapesFrame, shape: Tuple[int, int], options: FogOptions) -> np.ndarray:
    """The completed distance map of one Cityscapes frame (``shape``: the image's H, W)."""
    disparity, valid = read_disparity(frame.disparity)
    if disparity.shape != tuple(shape):
        raise ValueError(f"{frame.disparity} is {disparity.shape}, its image {frame.image} is {tuple(shape)}")
    dist = cityscapes_distance(disparity, valid, read_camera(frame.camera), options.max_distance)
    sky = sky_from_label_ids(frame.label_ids) if options.use_sky_labels else None
    if sky is not None and sky.shape != dist.shape:
        raise ValueError(f"{frame.label_ids} is {sky.shape}, its image {frame.image} is {dist.shape}")
    return fill_distance(dist, sky, options.max_distance, options.median)


def fog_cityscapes_frame(
    root: str, frame: CityscapesFrame, betas: Sequence[float], options: FogOptions, overwrite: bool = False
) -> int:
    """Write the foggy images of one frame for every beta; returns how many were written
    (existing outputs are kept unless ``overwrite``)."""
    outs = [(b, foggy_output_path(root, frame, b)) for b in betas]
    if not overwrite:
        outs = [(b, p) for b, p in outs if not os.path.isfile(p)]
    if not outs:
        return 0
    image = read_image(frame.image)
    dist = frame_distance(frame, image.shape[:2], options)
    light = resolve_atmospheric_light(_as_float(image), options.atmospheric_light)
    for beta, path in outs:
        radius = DEFAULT_GUIDED_RADIUS if options.guided_radius is None else options.guided_radius
        foggy, _ = render_fog(image, dist, float(beta), light, radius, options.guided_eps)
        write_image(path, foggy)
    return len(outs)


def _run_parallel(func, items: list, num_workers: int, what: str) -> int:
    total, written = len(items), 0
    step = max(1, total // 20)
    if num_workers > 1 and total > 1:
        with Pool(num_workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            for i, n in enumerate(pool.imap(func, items, chunksize=1)):
                written += n
                if (i + 1) % step == 0 or i + 1 == total:
                    logger.info("%s: %d / %d done", what, i + 1, total)
    else:
        for i, item in enumerate(items):
            written += func(item)
            if (i + 1) % step == 0 or i + 1 == total:
                logger.info("%s: %d / %d done", what, i + 1, total)
    return written


class _CityscapesJob:  # picklable callable for Pool.imap
    def __init__(self, root, betas, options, overwrite):
        self.root, self.betas, self.options, self.overwrite = root, betas, options, overwrite

    def __call__(self, frame):
        return fog_cityscapes_frame(self.root, frame, self.betas, self.options, self.overwrite)


def make_foggy_cityscapes(
    root: str,
    splits: Sequence[str] = SPLITS,
    betas: Sequence[Union[float, str]] = DEFAULT_BETAS,
    options: FogOptions = FogOptions(),
    num_workers: int = 1,
    overwrite: bool = False,
) -> Dict[str, int]:
    """Render Foggy Cityscapes-style images for every frame of ``splits`` under ``root``:
    ``<root>/foggy_cityscapes/leftImg8bit_foggy/{split}/{city}/{base}_leftImg8bit_foggy_beta_{beta}.png``.
    Returns ``{"frames": n, "written": images written, "skipped": images already there}``."""
    betas = [float(b) for b in betas]
    for b in betas:
        format_beta(b)
    frames = list_cityscapes_frames(root, splits)
    written = _run_parallel(_CityscapesJob(root, betas, options, overwrite), frames, num_workers, "foggy cityscapes")
    return {"frames": len(frames), "written": written, "skipped": len(frames) * len(betas) - written}


def list_images(folder: str) -> List[str]:
    """Image files under ``folder`` (recursively), as sorted paths relative to it."""
    return sorted(os.path.relpath(p, folder) for p in io.list_images(folder))


class _FolderJob:
    def __init__(self, input_dir, output_dir, beta, options, overwrite):
        self.input_dir, self.output_dir = input_dir, output_dir
        self.beta, self.options, self.overwrite = beta, options, overwrite

    def __call__(self, rel):
        out = os.path.join(self.output_dir, rel)
        if not self.overwrite and os.path.isfile(out):
            return 0
        image = read_image(os.path.join(self.input_dir, rel))
        o = self.options
        dist = ground_plane_distance(image.shape[0], image.shape[1], o.horizon, o.near_distance, o.max_distance)
        radius = o.guided_radius or 0  # the prior has no depth edges to align to: no filter by default
        foggy, _ = render_fog(image, dist, self.beta, o.atmospheric_light, radius, o.guided_eps)
        write_image(out, foggy)
        return 1


def make_foggy_folder(
    input_dir: str,
    output_dir: str,
    beta: float,
    options: FogOptions = FogOptions(),
    num_workers: int = 1,
    overwrite: bool = False,
) -> Dict[str, int]:
    """Fog every image under ``input_dir`` with the ground-plane prior, writing it under
    ``output_dir`` at the same relative path and file name (same format). Labels are not
    touched: fog moves no pixel, so boxes and masks of the clear images still apply."""
    in_abs, out_abs = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if not os.path.isdir(in_abs):
        raise FileNotFoundError(f"input folder not found: {in_abs}")
    if out_abs == in_abs or out_abs.startswith(in_abs + os.sep):
        raise ValueError(f"the output folder {out_abs} must not be the input folder or inside it")
    format_beta(beta)
    rels = list_images(in_abs)
    if not rels:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {in_abs}")
    probe = transmittance(
        ground_plane_distance(1000, 1, options.horizon, options.near_distance, options.max_distance), beta)
    logger.info("ground-plane prior: t = %.3f at the bottom row, %.3f at the top row", probe[-1, 0], probe[0, 0])
    vanish = float(np.mean(probe < 0.05))
    if vanish > 0.05:
        logger.warning(
            "%.0f %% of the rows (from the top) get t < 0.05: objects there nearly vanish while their labels "
            "stay. For cameras looking down or indoors use a negative --horizon (and a larger beta for "
            "visible haze at room distances).", 100 * vanish,
        )
    written = _run_parallel(_FolderJob(in_abs, out_abs, float(beta), options, overwrite), rels, num_workers, "fog")
    return {"images": len(rels), "written": written, "skipped": len(rels) - written}
