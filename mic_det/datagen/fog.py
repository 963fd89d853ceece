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
from .guided_filter import guided_filter
from .depth import (  # noqa: F401  (part of this module's interface: make_foggy.py and the tests use them)
    Camera,
    CAMERA_DIR,
    CAMERA_SUFFIX,
    cityscapes_distance,
    DEFAULT_HORIZON,
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MEDIAN,
    DEFAULT_NEAR_DISTANCE,
    DISPARITY_DIR,
    DISPARITY_SUFFIX,
    fill_distance,
    ground_plane_distance,
    LABEL_IDS_SUFFIX,
    ray_factor,
    read_camera,
    read_disparity,
    sky_from_label_ids,
    top_runs,
)

logger = logging.getLogger(__name__)

DEFAULT_BETAS = (0.005, 0.01, 0.02)
DEFAULT_GUIDED_RADIUS = 8  # px, guided filter of t (0: off); a 17 x 17 window at 2048 x 1024
DEFAULT_GUIDED_EPS = 1e-4  # guided filter regulariser (colour guide and t in [0, 1])
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
# Fog.
# ---------------------------------------------------------------------------------------
def transmittance(distance: np.ndarray, beta: float) -> np.ndarray:
    """``exp(-beta * distance)``, float32."""
    return np.exp(-float(beta) * np.asarray(distance, np.float64)).astype(np.float32)


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
