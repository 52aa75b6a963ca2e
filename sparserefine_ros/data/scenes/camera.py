"""Labels, materials, and the pinhole camera and canvas that parts are painted on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from sparserefine_ros.labels import LABEL_ID

STYLES = ("sunny", "overcast", "dusk", "hazy", "rainy")

ROAD, SIDEWALK, BUILDING, WALL, FENCE = (
    LABEL_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence")
)
POLE, LIGHT, SIGN, VEG, TERRAIN, SKY = (
    LABEL_ID[n] for n in ("pole", "traffic light", "traffic sign", "vegetation", "terrain", "sky")
)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN = (
    LABEL_ID[n] for n in ("person", "rider", "car", "truck", "bus", "train")
)
MOTORCYCLE, BICYCLE = LABEL_ID["motorcycle"], LABEL_ID["bicycle"]
EGO, STATIC, GROUND, PARKING = (LABEL_ID[n] for n in ("ego vehicle", "static", "ground", "parking"))

# Materials: texture amplitudes (fine per-pixel, mid ~4 px, coarse ~32 px) relative to albedo.
# Values are tuned so that each class has a recognisable texture while colours overlap.
MATERIALS = {
    "sky": (0.0, 0.0, 0.0),
    "asphalt": (0.10, 0.06, 0.05),
    "paving": (0.07, 0.08, 0.04),
    "facade": (0.04, 0.05, 0.06),
    "glass": (0.01, 0.02, 0.25),
    "foliage": (0.30, 0.28, 0.15),
    "grass": (0.16, 0.10, 0.14),
    "paint": (0.02, 0.02, 0.03),
    "metal": (0.015, 0.01, 0.04),
    "cloth": (0.05, 0.10, 0.05),
    "concrete": (0.06, 0.04, 0.08),
    "lamp": (0.0, 0.0, 0.0),
}
MATERIAL_INDEX = {name: i for i, name in enumerate(MATERIALS)}
_AMPLITUDES = np.array(list(MATERIALS.values()), dtype=np.float32)
_GROUND_LABELS = np.zeros(256, dtype=bool)
_GROUND_LABELS[[ROAD, SIDEWALK, TERRAIN, GROUND, PARKING]] = True

NEAR = 0.3  # metres: the camera's near clipping plane
SHIFT = 3  # cv2 sub-pixel bits: thin structures keep their true width
_SCALE = float(1 << SHIFT)


@dataclass
class Camera:
    """Pinhole camera at (x, height, z), yawed by ``yaw`` radians (positive: looks right)."""

    width: int
    height_px: int
    focal: float
    cx: float
    cy: float
    x: float = 0.0
    height: float = 1.3
    z: float = 0.0
    yaw: float = 0.0

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        """World points (..., 3) to camera coordinates (..., 3) with Z the depth."""
        d = pts - np.array([self.x, self.height, self.z], dtype=np.float64)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        out = np.empty_like(d)
        out[..., 0] = c * d[..., 0] - s * d[..., 2]
        out[..., 1] = d[..., 1]
        out[..., 2] = s * d[..., 0] + c * d[..., 2]
        return out

    def image_xy(self, cam_pts: np.ndarray) -> np.ndarray:
        z = cam_pts[..., 2:3]
        return np.concatenate(
            [
                self.cx + self.focal * cam_pts[..., 0:1] / z,
                self.cy - self.focal * cam_pts[..., 1:2] / z,
            ],
            axis=-1,
        )


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman against the near plane for one polygon in camera coordinates."""
    inside = poly[:, 2] >= NEAR
    if inside.all():
        return poly
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if len(out) >= 3 else np.empty((0, 3))


class Canvas:
    """Painter's-algorithm target: an int32 part map plus per-part label, albedo and material."""

    def __init__(self, camera: Camera) -> None:
        self.cam = camera
        self.h, self.w = camera.height_px, camera.width
        self.parts = np.zeros((self.h, self.w), dtype=np.int32)  # part 0 is the sky
        self.shadow = np.zeros((self.h, self.w), dtype=np.uint8)
        self.labels = [SKY]
        self.colors = [(0.0, 0.0, 0.0)]
        self.materials = [MATERIAL_INDEX["sky"]]
        self.depths = [1e4]

    def part(self, label: int, color, material: str, depth: float) -> int:
        self.labels.append(label)
        self.colors.append(tuple(color))
        self.materials.append(MATERIAL_INDEX[material])
        self.depths.append(depth)
        return len(self.labels) - 1

    def fill_px(
        self, polys: list[np.ndarray], index: int, target: np.ndarray | None = None
    ) -> None:
        if polys:
            pts = [np.round(p * _SCALE).astype(np.int32) for p in polys]
            cv2.fillPoly(self.parts if target is None else target, pts, index, cv2.LINE_8, SHIFT)

    def polys(self, polys_world: list[np.ndarray], label: int, color, material: str) -> None:
        """Planar polygons (each (N, 3) in metres), one part for all of them."""
        projected, depths = [], []
        for poly in polys_world:
            cam = _clip_near(self.cam.to_camera(np.asarray(poly, dtype=np.float64)))
            if len(cam):
                projected.append(self.cam.image_xy(cam))
                depths.append(cam[:, 2].mean())
        if projected:
            self.fill_px(projected, self.part(label, color, material, float(np.mean(depths))))

    def quads(self, quads: np.ndarray, label: int, color, material: str) -> None:
        """Many small quads (n, 4, 3) with one part; those crossing the near plane are dropped."""
        if len(quads) == 0:
            return
        cam = self.cam.to_camera(quads)
        ok = (cam[..., 2] > NEAR).all(axis=1)
        if not ok.any():
            return
        cam = cam[ok]
        xy = self.cam.image_xy(cam)
        index = self.part(label, color, material, float(cam[..., 2].mean()))
        self.fill_px(list(xy), index)

    def ground_shadow(self, polys_world: list[np.ndarray], strength: int) -> None:
        """Darkening of the ground under ``polys_world`` (on-ground polygons), 0..255."""
        projected = []
        for poly in polys_world:
            cam = _clip_near(self.cam.to_camera(np.asarray(poly, dtype=np.float64)))
            if len(cam):
                projected.append(self.cam.image_xy(cam))
        if projected:
            pts = [np.round(p * _SCALE).astype(np.int32) for p in projected]
            cv2.fillPoly(self.shadow, pts, strength, cv2.LINE_8, SHIFT)

    def segment(self, p0, p1, width: float, label: int, color, material: str) -> None:
        """A thin cylinder (pole, tube) from p0 to p1 of ``width`` metres, as a screen quad."""
        cam = self.cam.to_camera(np.array([p0, p1], dtype=np.float64))
        if (cam[:, 2] < NEAR).all():
            return
        if (cam[:, 2] < NEAR).any():  # move the hidden end onto the near plane
            a, b = (cam[0], cam[1]) if cam[0, 2] >= NEAR else (cam[1], cam[0])
            t = (a[2] - NEAR) / (a[2] - b[2])
            cam = np.array([a, a + t * (b - a)])
        xy = self.cam.image_xy(cam)
        half = 0.5 * self.cam.focal * width / cam[:, 2]
        d = xy[1] - xy[0]
        n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
        quad = np.array(
            [xy[0] + n * half[0], xy[1] + n * half[1], xy[1] - n * half[1], xy[0] - n * half[0]]
        )
        self.fill_px([quad], self.part(label, color, material, float(cam[:, 2].mean())))

    def mask(self, x0: int, y0: int, mask: np.ndarray, index: int) -> None:
        """Paint a boolean mask whose top-left corner is at (x0, y0), clipped to the frame."""
        h, w = mask.shape
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, self.w), min(y0 + h, self.h)
        if xa < xb and ya < yb:
            sub = mask[ya - y0 : yb - y0, xa - x0 : xb - x0]
            self.parts[ya:yb, xa:xb][sub] = index
