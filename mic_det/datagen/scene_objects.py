"""The objects of the synthetic street scenes (scenes.py): a car, a person and a bus drawn
in their own box from a random generator, with their colour palettes, and the colour
helpers the scene renderer shares. Each drawer returns the RGB patch and the mask of the
pixels it drew."""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

_CAR_COLORS = np.array(
    [
        (0.78, 0.10, 0.10), (0.12, 0.22, 0.70), (0.92, 0.92, 0.92), (0.08, 0.08, 0.10),
        (0.60, 0.62, 0.66), (0.90, 0.75, 0.12), (0.12, 0.48, 0.22), (0.45, 0.18, 0.50),
        (0.95, 0.45, 0.10), (0.35, 0.30, 0.25),
    ],
    dtype=np.float32,
)
_BUS_COLORS = np.array(
    [
        (0.95, 0.80, 0.10), (0.80, 0.12, 0.10), (0.15, 0.30, 0.75), (0.92, 0.92, 0.90),
        (0.15, 0.55, 0.30), (0.95, 0.50, 0.10), (0.55, 0.58, 0.62),
    ],
    dtype=np.float32,
)
_SKIN = np.array(
    [(0.95, 0.80, 0.68), (0.85, 0.66, 0.50), (0.62, 0.45, 0.32), (0.40, 0.28, 0.20)],
    dtype=np.float32,
)


def jitter_color(rng: np.random.Generator, color, amount: float = 0.06) -> Tuple[float, ...]:
    d = rng.uniform(-amount, amount, 3)
    return tuple(min(1.0, max(0.0, float(c) + float(e))) for c, e in zip(color, d))


def _pick(rng: np.random.Generator, palette: np.ndarray, amount: float = 0.06):
    return jitter_color(rng, palette[rng.integers(len(palette))], amount)


def random_color(rng: np.random.Generator, sat=(0.3, 0.9), val=(0.3, 0.95)):
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.uint8
    )
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0
    return tuple(float(v) for v in rgb)


class _Patch:
    """An object drawn in its own box: RGB ``image`` plus the ``mask`` of drawn pixels.
    Coordinates are given as fractions of the box width / height."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.image = np.zeros((h, w, 3), np.float32)
        self.mask = np.zeros((h, w), np.uint8)

    def _p(self, fx: float, fy: float) -> Tuple[int, int]:
        return int(round(fx * (self.w - 1))), int(round(fy * (self.h - 1)))

    def rect(self, fx0, fy0, fx1, fy1, color):
        p0, p1 = self._p(fx0, fy0), self._p(fx1, fy1)
        cv2.rectangle(self.image, p0, p1, color, -1)
        cv2.rectangle(self.mask, p0, p1, 255, -1)

    def poly(self, pts, color):
        arr = np.array([self._p(x, y) for x, y in pts], np.int32)
        cv2.fillPoly(self.image, [arr], color)
        cv2.fillPoly(self.mask, [arr], 255)

    def circle(self, fx, fy, radius_px, color):
        c, r = self._p(fx, fy), max(1, int(round(radius_px)))
        cv2.circle(self.image, c, r, color, -1)
        cv2.circle(self.mask, c, r, 255, -1)

    def line(self, fx0, fy0, fx1, fy1, thickness_px, color):
        p0, p1, t = self._p(fx0, fy0), self._p(fx1, fy1), max(1, int(round(thickness_px)))
        cv2.line(self.image, p0, p1, color, t)
        cv2.line(self.mask, p0, p1, 255, t)

    def done(self, flip: bool):
        img, mask = self.image, self.mask > 0
        if flip:
            img, mask = img[:, ::-1], mask[:, ::-1]
        return np.ascontiguousarray(img), np.ascontiguousarray(mask)


def _draw_car(rng, h, w):
    p = _Patch(h, w)
    body = _pick(rng, _CAR_COLORS)
    dark = tuple(0.55 * c for c in body)
    glass = jitter_color(rng, (0.22, 0.28, 0.34), 0.08)
    r = 0.19 * h  # wheel radius (px)
    fr = r / max(h - 1, 1)
    p.rect(0.0, 0.40, 1.0, 1.0 - 0.8 * fr, body)  # lower body
    p.poly([(0.17, 0.44), (0.30, 0.0), (0.70, 0.0), (0.84, 0.44)], body)  # cabin
    p.poly([(0.24, 0.41), (0.33, 0.10), (0.48, 0.10), (0.48, 0.41)], glass)
    p.poly([(0.52, 0.41), (0.52, 0.10), (0.67, 0.10), (0.77, 0.41)], glass)
    p.rect(0.0, 0.78 - 0.8 * fr, 1.0, 0.84 - 0.8 * fr, dark)  # bumper line
    p.rect(0.0, 0.50, 0.05, 0.60, (0.75, 0.08, 0.05))  # tail light
    p.rect(0.95, 0.50, 1.0, 0.60, (0.98, 0.95, 0.70))  # head light
    for fx in (0.21, 0.79):
        p.circle(fx, 1.0 - fr, r, (0.05, 0.05, 0.06))
        p.circle(fx, 1.0 - fr, 0.45 * r, (0.55, 0.55, 0.58))
    return p.done(bool(rng.integers(2)))


def _draw_person(rng, h, w):
    p = _Patch(h, w)
    skin = _pick(rng, _SKIN, 0.04)
    shirt = random_color(rng)
    pants = random_color(rng, sat=(0.1, 0.6), val=(0.12, 0.5))
    hair = jitter_color(rng, (0.12, 0.09, 0.06), 0.06)
    head_r = 0.095 * h
    leg_t, arm_t = 0.20 * w, 0.13 * w
    stride_l, stride_r = rng.uniform(0.12, 0.40), rng.uniform(0.60, 0.88)
    p.line(0.42, 0.55, stride_l, 0.97, leg_t, pants)
    p.line(0.58, 0.55, stride_r, 0.97, leg_t, pants)
    p.rect(stride_l - 0.12, 0.96, stride_l + 0.12, 1.0, (0.06, 0.06, 0.06))
    p.rect(stride_r - 0.12, 0.96, stride_r + 0.12, 1.0, (0.06, 0.06, 0.06))
    swing = rng.uniform(-0.06, 0.06)
    p.line(0.22, 0.23, 0.08 + swing, 0.50, arm_t, shirt)
    p.line(0.78, 0.23, 0.92 - swing, 0.50, arm_t, shirt)
    p.poly([(0.20, 0.19), (0.80, 0.19), (0.72, 0.58), (0.28, 0.58)], shirt)  # torso
    p.circle(0.5, 0.105, head_r, skin)
    p.circle(0.5, 0.085, 0.85 * head_r, hair)
    p.circle(0.5, 0.12, 0.8 * head_r, skin)
    return p.done(False)


def _draw_bus(rng, h, w):
    p = _Patch(h, w)
    body = _pick(rng, _BUS_COLORS)
    roof = tuple(0.8 * c for c in body)
    accent = random_color(rng, sat=(0.5, 1.0), val=(0.4, 0.9))
    glass = jitter_color(rng, (0.20, 0.26, 0.32), 0.08)
    r = 0.12 * h
    fr = r / max(h - 1, 1)
    p.rect(0.0, 0.04, 1.0, 1.0 - 0.7 * fr, body)
    p.rect(0.01, 0.0, 0.99, 0.07, roof)
    p.rect(0.0, 0.60, 1.0, 0.66, accent)  # stripe
    n = int(rng.integers(5, 9))
    x0, x1 = 0.16, 0.91
    step = (x1 - x0) / n
    for i in range(n):
        p.rect(x0 + i * step + 0.012, 0.15, x0 + (i + 1) * step - 0.012, 0.47, glass)
    p.rect(0.93, 0.12, 0.995, 0.55, glass)  # windscreen
    p.rect(0.04, 0.15, 0.13, 0.90 - 0.7 * fr, glass)  # door
    for fx in (0.22, 0.80):
        p.circle(fx, 1.0 - fr, r, (0.05, 0.05, 0.06))
        p.circle(fx, 1.0 - fr, 0.45 * r, (0.55, 0.55, 0.58))
    return p.done(bool(rng.integers(2)))


# one drawer per class, in scenes.CLASSES order
DRAW = (_draw_car, _draw_person, _draw_bus)
