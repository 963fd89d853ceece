"""The guided filter (He et al., 2010): edge-preserving smoothing of a map (the fog's
transmittance) that follows the edges of a guide image, so fog does not bleed across
object boundaries where the distance map is coarse."""
import cv2
import numpy as np


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
