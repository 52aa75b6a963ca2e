"""Procedural high-resolution street scenes seen from a car, labelled with Cityscapes' classes.

Why it looks the way it does: SparseRefine only pays off where resolution matters, so the scenes
have what makes real 2-megapixel driving images hard at half resolution -- a pinhole camera over a
ground plane (objects shrink toward the horizon), thin structures (poles, fence pickets, bicycle
frames, curbs), small distant objects, ragged vegetation with sky showing through -- and nuisances
(lighting styles, cast shadows, haze, noise, blur, JPEG) so colour alone does not give the class.

How: a world (street layout and objects in metres, X right, Y up, Z forward) is built from a seed;
a frame is rendered from a camera pose by painting parts far to near into an integer part map with
cv2 (each part has a Cityscapes label id, an albedo and a material), then the picture is composed
from that map with vectorised per-material textures. Labels come out exact, as label ids (0..33);
:data:`~sparserefine_ros.labels.ID_TO_TRAIN_ID` gives train ids.

A :class:`World` is long enough for a drive: :class:`Drive` renders consecutive frames of a
camera moving along it while cars, riders and pedestrians move too.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from sparserefine_ros.labels import ID_TO_TRAIN_ID, LABEL_ID

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


# --------------------------------------------------------------------------------------------
# Camera and canvas


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


# --------------------------------------------------------------------------------------------
# World: layout and objects


@dataclass
class Obj:
    """One thing in the world: ``kind`` picks the drawing function; ``vz`` is its speed (m/s)."""

    kind: str
    x: float
    z: float
    params: dict
    vz: float = 0.0
    length: float = 0.0  # extent along Z, for draw order

    def z_at(self, t: float) -> float:
        return self.z + self.vz * t


@dataclass
class World:
    """A straight street with everything on it; ``frontage`` is drawn before ``objects``."""

    road_left: float
    road_right: float
    sidewalk_left: float
    sidewalk_right: float
    lane_width: float
    lane_centers: list[float]
    z_min: float
    z_max: float
    crossings: list[tuple[float, float]]
    style: str
    sun_side: int  # -1: sun from the left, +1: from the right
    frontage: list[Obj] = field(default_factory=list)
    objects: list[Obj] = field(default_factory=list)
    skyline: list[tuple[float, float, float, float, int]] = field(default_factory=list)
    parking_right: float = 0.0
    camera_height: float = 1.3
    horizon: float = 0.45
    ego_hood: float = 0.12
    light: tuple[float, float, float] = (1.0, 1.0, 1.0)
    look: dict = field(default_factory=dict)  # camera response, fixed for a whole drive
    crown_cache: dict = field(default_factory=dict)


def _palette(rng: np.random.Generator, base, spread: float) -> tuple[float, float, float]:
    c = np.asarray(base, dtype=np.float64) * rng.uniform(1 - spread, 1 + spread)
    c = c + rng.normal(0, spread * 0.25, 3)
    return tuple(np.clip(c, 0.02, 0.98))


FACADES = (
    (0.75, 0.68, 0.55),
    (0.55, 0.55, 0.55),
    (0.62, 0.38, 0.30),
    (0.85, 0.82, 0.75),
    (0.80, 0.70, 0.45),
    (0.45, 0.48, 0.52),
    (0.70, 0.60, 0.60),
)
CAR_PAINT = (
    (0.08, 0.08, 0.09),
    (0.85, 0.85, 0.85),
    (0.55, 0.56, 0.58),
    (0.6, 0.08, 0.08),
    (0.1, 0.2, 0.5),
    (0.2, 0.3, 0.25),
    (0.45, 0.4, 0.35),
    (0.9, 0.9, 0.92),
)
CLOTHES = (
    (0.1, 0.1, 0.12),
    (0.2, 0.25, 0.45),
    (0.6, 0.1, 0.1),
    (0.85, 0.85, 0.8),
    (0.35, 0.3, 0.25),
    (0.5, 0.5, 0.55),
    (0.15, 0.35, 0.2),
    (0.8, 0.6, 0.2),
)


def build_world(rng: np.random.Generator, length: float = 0.0, ego_speed: float = 10.0) -> World:
    """A random street long enough for a camera to drive ``length`` metres from z=0 at
    ``ego_speed`` m/s; with ``length`` 0 nothing moves (a single frame)."""
    lane_w = rng.uniform(3.0, 3.6)
    lanes_left = int(rng.integers(0, 4))
    lanes_right = int(rng.integers(0, 2))
    parking = rng.uniform(2.0, 2.5) if rng.random() < 0.5 else 0.0
    road_l = -lane_w * (0.5 + lanes_left)
    road_r = lane_w * (0.5 + lanes_right) + parking
    world = World(
        road_left=road_l,
        road_right=road_r,
        sidewalk_left=road_l - rng.uniform(2.0, 5.0),
        sidewalk_right=road_r + rng.uniform(2.0, 5.0),
        lane_width=lane_w,
        lane_centers=[lane_w * k for k in range(-lanes_left, lanes_right + 1)],
        z_min=-40.0,
        z_max=length + 260.0,
        crossings=[],
        style=STYLES[int(rng.integers(len(STYLES)))],
        sun_side=int(rng.choice([-1, 1])),
        parking_right=parking,
        camera_height=rng.uniform(1.15, 1.6),
        horizon=rng.uniform(0.40, 0.48),
        ego_hood=rng.uniform(0.07, 0.15),
    )
    world.light = {
        "sunny": (1.08, 1.0, 0.9),
        "overcast": (0.92, 0.95, 1.0),
        "dusk": (0.75, 0.55, 0.45),
        "hazy": (0.95, 0.97, 1.0),
        "rainy": (0.6, 0.65, 0.72),
    }[world.style]
    world.look = {
        "exposure": rng.uniform(0.85, 1.15),
        "gamma": rng.uniform(1.0, 1.3),
        "vignette": rng.uniform(0.1, 0.3),
        "blur": rng.uniform(0.3, 1.0),
        "noise": rng.uniform(0.5, 1.5),
        "haze": rng.uniform(60.0, 150.0),
        "jpeg": int(rng.integers(40, 95)) if rng.random() < 0.7 else 0,
        "texture_seed": int(rng.integers(2**31)),
    }
    z = rng.uniform(25.0, 90.0)
    while z < world.z_max:
        width = rng.uniform(10.0, 18.0)
        world.crossings.append((z, z + width))
        z += width + rng.uniform(60.0, 160.0)
    for side in (-1, 1):
        _build_frontage(world, rng, side)
        _build_sidewalk_objects(world, rng, side)
    _build_traffic(world, rng, length, ego_speed)
    _build_crossing_objects(world, rng)
    x = -400.0
    while x < 400.0:
        w = rng.uniform(10.0, 40.0)
        label = VEG if rng.random() < 0.3 else BUILDING
        world.skyline.append((x, x + w, rng.uniform(8.0, 45.0), rng.uniform(350.0, 500.0), label))
        x += w * rng.uniform(0.7, 1.1)
    return world


def _in_crossing(world: World, z0: float, z1: float) -> bool:
    return any(z0 < b and z1 > a for a, b in world.crossings)


def _segments(world: World, rng: np.random.Generator):
    """Pieces of street frontage between crossings: (z0, z1)."""
    z = world.z_min
    for a, b in [*world.crossings, (world.z_max, world.z_max)]:
        while z < a - 1.0:
            end = min(a, z + rng.uniform(8.0, 40.0))
            yield z, end
            z = end
        z = b


def _build_frontage(world: World, rng: np.random.Generator, side: int) -> None:
    edge = world.sidewalk_right if side > 0 else world.sidewalk_left
    for z0, z1 in _segments(world, rng):
        kind = rng.choice(["building", "trees", "wall", "fence"], p=[0.58, 0.17, 0.12, 0.13])
        setback = rng.uniform(1.0, 5.0) if kind == "building" and rng.random() < 0.3 else 0.0
        if kind != "building" or setback > 0:
            depth = setback if kind == "building" else rng.uniform(6.0, 15.0)
            world.frontage.append(
                Obj("terrain", edge, z0, {"side": side, "depth": depth}, length=z1 - z0)
            )
        if kind == "building" or (kind != "trees" and rng.random() < 0.6):
            x_face = edge + side * (setback if kind == "building" else rng.uniform(8.0, 16.0))
            world.frontage.append(_building(rng, x_face, side, z0, z1))
        if kind == "trees":
            for tz in np.arange(z0 + rng.uniform(1, 5), z1, rng.uniform(4.0, 9.0)):
                world.objects.append(_tree(rng, edge + side * rng.uniform(1.5, 6.0), float(tz)))
            if rng.random() < 0.5:
                world.frontage.append(
                    Obj("hedge", edge + side * 0.6, z0, _hedge(rng, z1 - z0), length=z1 - z0)
                )
        elif kind == "wall":
            world.frontage.append(
                Obj(
                    "wall",
                    edge + side * 0.2,
                    z0,
                    {
                        "side": side,
                        "height": rng.uniform(0.5, 2.6),
                        "color": _palette(rng, (0.6, 0.58, 0.55), 0.2),
                    },
                    length=z1 - z0,
                )
            )
        elif kind == "fence":
            world.frontage.append(
                Obj(
                    "fence",
                    edge + side * 0.2,
                    z0,
                    {
                        "height": rng.uniform(0.9, 2.0),
                        "gap": rng.uniform(0.1, 0.25),
                        "picket": rng.uniform(0.025, 0.06),
                        "style": rng.choice(["picket", "rails"]),
                        "color": _palette(rng, (0.5, 0.45, 0.4), 0.35),
                    },
                    length=z1 - z0,
                )
            )
    for a, b in world.crossings:  # buildings down the cross street, seen through the gap
        x = edge + side * rng.uniform(15.0, 30.0)
        world.frontage.append(_building(rng, x, side, a - 5.0, b + rng.uniform(5.0, 20.0)))


def _building(rng: np.random.Generator, x_face: float, side: int, z0: float, z1: float) -> Obj:
    floors = int(rng.integers(2, 8))
    floor_h = rng.uniform(2.9, 3.6)
    return Obj(
        "building",
        x_face,
        z0,
        {
            "side": side,
            "depth": rng.uniform(10.0, 20.0),
            "height": floors * floor_h + rng.uniform(0, 2),
            "floor": floor_h,
            "floors": floors,
            "color": _palette(rng, FACADES[rng.integers(len(FACADES))], 0.12),
            "win_w": rng.uniform(0.9, 1.6),
            "win_h": rng.uniform(1.2, 1.9),
            "pitch": rng.uniform(2.2, 3.6),
            "glass": _palette(rng, (0.25, 0.3, 0.35), 0.3),
            "shop": rng.random() < 0.5,
            "shop_color": _palette(rng, CAR_PAINT[rng.integers(len(CAR_PAINT))], 0.2),
        },
        length=z1 - z0,
    )


def _tree(rng: np.random.Generator, x: float, z: float) -> Obj:
    green = (0.25, 0.42, 0.12) if rng.random() < 0.8 else (0.55, 0.45, 0.12)
    return Obj(
        "tree",
        x,
        z,
        {
            "trunk_h": rng.uniform(1.8, 4.0),
            "trunk_w": rng.uniform(0.15, 0.4),
            "radius": rng.uniform(1.5, 3.8),
            "color": _palette(rng, green, 0.2),
            "trunk": _palette(rng, (0.3, 0.25, 0.2), 0.2),
            "seed": int(rng.integers(2**31)),
        },
    )


def _hedge(rng: np.random.Generator, length: float) -> dict:
    n = max(2, int(length / 0.15))
    tops = rng.uniform(0.7, 1.6) + np.cumsum(rng.normal(0, 0.03, n)) + rng.uniform(-0.12, 0.12, n)
    return {"tops": np.clip(tops, 0.3, 2.5), "color": _palette(rng, (0.2, 0.35, 0.12), 0.25)}


def _person(rng: np.random.Generator, x: float, z: float, vz: float) -> Obj:
    return Obj(
        "person",
        x,
        z,
        {
            "height": rng.uniform(1.5, 1.95),
            "shirt": _palette(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.2),
            "pants": _palette(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.2),
            "skin": _palette(rng, (0.75, 0.58, 0.45), 0.3),
            "phase": rng.uniform(0, 6.28),
            "label": PERSON,
        },
        vz=vz,
    )


def _bike(
    rng: np.random.Generator, x: float, z: float, vz: float, motor: bool, ridden: bool, facing: str
) -> Obj:
    return Obj(
        "bike",
        x,
        z,
        {
            "motor": motor,
            "facing": facing,
            "color": _palette(rng, CAR_PAINT[rng.integers(len(CAR_PAINT))], 0.2),
            "rider": _person(rng, x, z, vz) if ridden else None,
        },
        vz=vz,
        length=1.8,
    )


def _vehicle(
    rng: np.random.Generator, x: float, z: float, vz: float, kind: str, facing: int
) -> Obj:
    dims = {
        "car": (rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.9), rng.uniform(1.35, 1.6)),
        "truck": (2.4, rng.uniform(6.0, 9.0), rng.uniform(2.8, 3.6)),
        "bus": (2.55, rng.uniform(11.0, 13.0), rng.uniform(2.9, 3.2)),
        "train": (2.4, rng.uniform(25.0, 35.0), 3.3),
    }[kind]
    paint = CAR_PAINT[rng.integers(len(CAR_PAINT))] if kind == "car" else (0.75, 0.75, 0.7)
    if kind in ("bus", "train") and rng.random() < 0.6:
        paint = ((0.8, 0.75, 0.2), (0.7, 0.15, 0.15), (0.2, 0.45, 0.7))[rng.integers(3)]
    return Obj(
        kind,
        x,
        z,
        {
            "w": dims[0],
            "l": dims[1],
            "h": dims[2],
            "color": _palette(rng, paint, 0.1),
            "facing": facing,
            "glass": _palette(rng, (0.12, 0.14, 0.17), 0.3),
        },
        vz=vz,
        length=dims[1],
    )


def _build_sidewalk_objects(world: World, rng: np.random.Generator, side: int) -> None:
    curb = world.road_right if side > 0 else world.road_left
    edge = world.sidewalk_right if side > 0 else world.sidewalk_left
    z = world.z_min + rng.uniform(0, 20)
    while z < world.z_max:  # street lamps near the curb
        if not _in_crossing(world, z - 1, z + 1):
            world.objects.append(
                Obj(
                    "lamp",
                    curb + side * 0.5,
                    z,
                    {"height": rng.uniform(6, 9), "side": side, "arm": rng.uniform(0.8, 2.2)},
                )
            )
        z += rng.uniform(18.0, 35.0)
    z = world.z_min + rng.uniform(0, 30)
    while z < world.z_max:  # traffic signs
        world.objects.append(Obj("sign", curb + side * rng.uniform(0.3, 0.8), z, _sign(rng)))
        z += rng.uniform(10.0, 40.0)
    z = world.z_min
    while z < world.z_max:  # pedestrians, in small groups
        z += rng.exponential(16.0)
        for _ in range(int(rng.integers(1, 4))):
            x = rng.uniform(curb, edge) if side > 0 else rng.uniform(edge, curb)
            vz = rng.choice([-1, 1]) * rng.uniform(0.0, 1.6)
            world.objects.append(_person(rng, float(x), z + rng.uniform(-1.5, 1.5), vz))
    z = world.z_min + rng.uniform(0, 40)
    while z < world.z_max:  # parked bicycles, bins
        if rng.random() < 0.6:
            for k in range(int(rng.integers(1, 5))):
                world.objects.append(
                    _bike(
                        rng,
                        edge - side * rng.uniform(0.5, 1.2),
                        z + 0.7 * k,
                        0.0,
                        rng.random() < 0.2,
                        False,
                        "side",
                    )
                )
        else:
            world.objects.append(
                Obj("bin", curb + side * 0.6, z, {"color": _palette(rng, (0.2, 0.3, 0.2), 0.4)})
            )
        z += rng.uniform(15.0, 45.0)
    if rng.random() < 0.35:  # trees along the curb too
        for tz in np.arange(world.z_min + rng.uniform(0, 10), world.z_max, rng.uniform(7.0, 14.0)):
            if not _in_crossing(world, tz - 2, tz + 2):
                world.objects.append(_tree(rng, curb + side * rng.uniform(0.8, 1.5), float(tz)))


def _sign(rng: np.random.Generator) -> dict:
    shape = rng.choice(["circle", "triangle", "rect", "diamond"])
    face = {
        "circle": (0.85, 0.1, 0.1),
        "triangle": (0.92, 0.92, 0.9),
        "rect": (0.1, 0.3, 0.7),
        "diamond": (0.95, 0.8, 0.1),
    }[shape]
    return {
        "shape": shape,
        "size": rng.uniform(0.45, 0.9),
        "height": rng.uniform(2.0, 3.2),
        "face": _palette(rng, face, 0.1),
        "second": rng.random() < 0.3,
    }


def _build_traffic(world: World, rng: np.random.Generator, length: float, ego_speed: float) -> None:
    for lane in world.lane_centers:
        oncoming = lane < -0.1 and rng.random() < 0.6
        z = world.z_min + rng.uniform(0, 20)
        while z < world.z_max:
            clearance = 8.0 if lane == 0.0 else 3.0  # keep the ego car's own spot free
            if -12.0 < z < clearance:
                z = clearance + rng.uniform(2.0, 15.0)
            kind = rng.choice(["car", "truck", "bus"], p=[0.85, 0.09, 0.06])
            speed = (-1 if oncoming else 1) * rng.uniform(6.0, 13.0)
            if length == 0:
                speed = 0.0
            elif lane == 0.0:  # the car ahead keeps its distance
                speed = ego_speed
            v = _vehicle(
                rng, lane + rng.uniform(-0.3, 0.3), z, speed, str(kind), -1 if oncoming else 1
            )
            world.objects.append(v)
            z += v.params["l"] + rng.uniform(6.0, 60.0)
    if world.parking_right:
        z = world.z_min
        while z < world.z_max:
            if not _in_crossing(world, z - 5, z + 6) and rng.random() < 0.75:
                v = _vehicle(rng, world.road_right - world.parking_right / 2, z, 0.0, "car", 1)
                world.objects.append(v)
            z += rng.uniform(5.2, 7.0)
    z = world.z_min + rng.uniform(0, 30)
    while z < world.z_max:  # riders near the right edge of the road
        motor = rng.random() < 0.4
        x = world.road_right - world.parking_right - rng.uniform(0.6, 1.2)
        speed = rng.uniform(3.0, 7.0) + (ego_speed * 0.6 if motor else 0.0)
        world.objects.append(_bike(rng, x, z, speed if length > 0 else 0.0, motor, True, "rear"))
        z += rng.uniform(20.0, 70.0)
    if rng.random() < 0.25:  # a tram in the middle of the road
        x = (
            world.road_left + rng.uniform(1.2, 2.0)
            if world.road_left < -2
            else world.lane_centers[-1]
        )
        world.objects.append(_vehicle(rng, x, rng.uniform(15.0, 120.0), 0.0, "train", -1))


def _build_crossing_objects(world: World, rng: np.random.Generator) -> None:
    for a, b in world.crossings:
        for x in (world.road_left - 0.5, world.road_right + 0.5):
            world.objects.append(
                Obj(
                    "traffic_light",
                    x,
                    a - 1.0,
                    {"height": rng.uniform(2.8, 3.8), "mast": 0.0, "lit": int(rng.integers(3))},
                )
            )
        if rng.random() < 0.7:
            world.objects.append(
                Obj(
                    "traffic_light",
                    world.road_right + 0.5,
                    b + 1.0,
                    {
                        "height": 5.5,
                        "mast": world.road_right - rng.uniform(1.0, 4.0),
                        "lit": int(rng.integers(3)),
                    },
                )
            )
        for _ in range(int(rng.integers(0, 6))):  # people on the crosswalk
            x = rng.uniform(world.sidewalk_left, world.sidewalk_right)
            world.objects.append(_person(rng, float(x), a - rng.uniform(1.5, 4.0), 0.0))
        if rng.random() < 0.5:
            world.objects.append(
                _bike(
                    rng,
                    rng.uniform(world.road_left, world.road_right),
                    (a + b) / 2,
                    0.0,
                    rng.random() < 0.4,
                    True,
                    "side",
                )
            )


# --------------------------------------------------------------------------------------------
# Drawing


def _quad_x(x: float, z0: float, z1: float, y0: float, y1: float) -> np.ndarray:
    """A rectangle in the plane X = x."""
    return np.array([[x, y0, z0], [x, y0, z1], [x, y1, z1], [x, y1, z0]], dtype=np.float64)


def _quad_z(z: float, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """A rectangle in the plane Z = z."""
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=np.float64)


def _ground(x0: float, x1: float, z0: float, z1: float, y: float = 0.0) -> np.ndarray:
    return np.array([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]], dtype=np.float64)


def _shade(color, factor: float) -> tuple[float, float, float]:
    return tuple(min(1.0, c * factor) for c in color)


def _box(canvas: Canvas, x0, x1, y0, y1, z0, z1, label, color, material, sun_side: int) -> None:
    """Visible faces of an axis-aligned box, lit from ``sun_side``."""
    cam = canvas.cam
    cx, cz = cam.x, cam.z
    if cx < x0:
        canvas.polys(
            [_quad_x(x0, z0, z1, y0, y1)],
            label,
            _shade(color, 1.0 if sun_side < 0 else 0.7),
            material,
        )
    elif cx > x1:
        canvas.polys(
            [_quad_x(x1, z0, z1, y0, y1)],
            label,
            _shade(color, 1.0 if sun_side > 0 else 0.7),
            material,
        )
    if cz < z0:
        canvas.polys([_quad_z(z0, x0, x1, y0, y1)], label, _shade(color, 0.85), material)
    elif cz > z1:
        canvas.polys([_quad_z(z1, x0, x1, y0, y1)], label, _shade(color, 0.85), material)
    if cam.height > y1:
        canvas.polys([_ground(x0, x1, z0, z1, y1)], label, _shade(color, 1.1), material)


def draw_ground(canvas: Canvas, world: World) -> None:
    z0, z1 = canvas.cam.z - 5.0, canvas.cam.z + 600.0
    canvas.polys([_ground(-600, 600, z0, z1)], GROUND, (0.45, 0.43, 0.4), "concrete")
    for side, edge in ((-1, world.sidewalk_left), (1, world.sidewalk_right)):
        outer = edge + side * 40.0
        canvas.polys(
            [_ground(min(edge, outer), max(edge, outer), z0, z1)],
            GROUND,
            (0.42, 0.41, 0.38),
            "paving",
        )
    canvas.polys(
        [_ground(world.road_left, world.road_right, z0, z1)], ROAD, (0.33, 0.33, 0.34), "asphalt"
    )
    for a, b in world.crossings:
        canvas.polys([_ground(-300, 300, a, b)], ROAD, (0.33, 0.33, 0.34), "asphalt")
    if world.parking_right:
        x = world.road_right - world.parking_right
        canvas.polys([_ground(x, world.road_right, z0, z1)], PARKING, (0.36, 0.35, 0.35), "paving")
    _draw_markings(canvas, world, z0, z1)
    for curb, edge in (
        (world.road_left, world.sidewalk_left),
        (world.road_right, world.sidewalk_right),
    ):
        lo, hi = min(curb, edge), max(curb, edge)
        tops, faces, seams = [], [], []
        cuts = [(z0, z0)] + [(a, b) for a, b in world.crossings if b > z0 and a < z1] + [(z1, z1)]
        for (_, s0), (s1, _) in itertools.pairwise(cuts):
            if s1 <= s0:
                continue
            tops.append(_ground(lo, hi, s0, s1, 0.12))
            faces.append(_quad_x(curb, s0, s1, 0.0, 0.12))
            start = math.ceil(max(s0, canvas.cam.z) / 1.0)
            for zz in range(start, int(min(s1, canvas.cam.z + 90.0))):  # paving joints
                seams.append(_ground(lo, hi, zz, zz + 0.03, 0.121))
        canvas.polys(tops, SIDEWALK, (0.62, 0.6, 0.58), "paving")
        canvas.polys(faces, SIDEWALK, (0.75, 0.74, 0.72), "concrete")
        canvas.quads(np.array(seams).reshape(-1, 4, 3), SIDEWALK, (0.45, 0.44, 0.43), "paving")


def _draw_markings(canvas: Canvas, world: World, z0: float, z1: float) -> None:
    white = (0.85, 0.85, 0.82)
    dashes = []
    start = math.floor(z0 / 9.0) * 9.0
    for x in [c + world.lane_width / 2 for c in world.lane_centers[:-1]]:
        for z in np.arange(start, min(z1, canvas.cam.z + 200.0), 9.0):
            if not _in_crossing(world, z - 1, z + 4):
                dashes.append(_ground(x - 0.07, x + 0.07, z, z + 3.0, 0.005))
    for x in (world.road_left + 0.3, world.road_right - world.parking_right - 0.3):
        for a, b in [(z0, z1)]:
            dashes.append(_ground(x - 0.08, x + 0.08, a, b, 0.005))
    canvas.quads(np.array(dashes).reshape(-1, 4, 3), ROAD, white, "paint")
    stripes = []
    for a, _ in world.crossings:
        for x in np.arange(world.road_left + 0.3, world.road_right - 0.5, 1.0):
            stripes.append(_ground(x, x + 0.5, a - 4.0, a - 0.8, 0.005))
    canvas.quads(np.array(stripes).reshape(-1, 4, 3), ROAD, white, "paint")


def draw_skyline(canvas: Canvas, world: World) -> None:
    for x0, x1, h, d, label in world.skyline:
        z = canvas.cam.z + d
        color = (0.55, 0.57, 0.6) if label == BUILDING else (0.25, 0.33, 0.2)
        if label == VEG:
            xs = np.linspace(x0, x1, 12)
            tops = h * 0.3 + np.abs(np.sin(xs * 1.7)) * h * 0.2
            pts = np.concatenate(
                [[[x0, 0, z]], np.stack([xs, tops, np.full(12, z)], 1), [[x1, 0, z]]]
            )
            canvas.polys([pts], VEG, color, "foliage")
        else:
            canvas.polys([_quad_z(z, x0, x1, 0.0, h)], BUILDING, color, "facade")


def draw_building(canvas: Canvas, world: World, o: Obj) -> None:
    p, side = o.params, o.params["side"]
    x_face, z0, z1 = o.x, o.z, o.z + o.length
    x_back = x_face + side * p["depth"]
    x0, x1 = min(x_face, x_back), max(x_face, x_back)
    _box(canvas, x0, x1, 0.0, p["height"], z0, z1, BUILDING, p["color"], "facade", world.sun_side)
    if (canvas.cam.x - x_face) * side >= 0:
        return  # the street face is not visible
    xw = x_face - side * 0.02
    zs = np.arange(z0 + p["pitch"] / 2, z1 - p["win_w"], p["pitch"])
    first = 1 if p["shop"] else 0
    ys = np.arange(first, p["floors"]) * p["floor"] + 0.9
    if len(zs) and len(ys):
        zz, yy = np.meshgrid(zs, ys)
        zz, yy = zz.ravel(), yy.ravel()
        n = len(zz)
        quads = np.empty((n, 4, 3))
        quads[:, :, 0] = xw
        quads[:, [0, 3], 2] = zz[:, None]
        quads[:, [1, 2], 2] = (zz + p["win_w"])[:, None]
        quads[:, [0, 1], 1] = yy[:, None]
        quads[:, [2, 3], 1] = (yy + p["win_h"])[:, None]
        canvas.quads(quads, BUILDING, p["glass"], "glass")
        frames = quads.copy()  # window sills: thin bright ledges
        frames[:, [2, 3], 1] = frames[:, [0, 1], 1] + 0.08
        frames[:, [0, 3], 2] -= 0.1
        frames[:, [1, 2], 2] += 0.1
        canvas.quads(frames, BUILDING, _shade(p["color"], 1.3), "concrete")
    if p["shop"]:
        canvas.polys([_quad_x(xw, z0 + 0.5, z1 - 0.5, 0.3, 2.6)], BUILDING, p["glass"], "glass")
        canvas.polys(
            [_quad_x(xw - side * 0.01, z0 + 1.0, min(z1 - 1.0, z0 + 8.0), 2.75, 3.3)],
            BUILDING,
            p["shop_color"],
            "paint",
        )


def draw_terrain(canvas: Canvas, world: World, o: Obj) -> None:
    side, x0 = o.params["side"], o.x
    x1 = x0 + side * o.params["depth"]
    canvas.polys(
        [_ground(min(x0, x1), max(x0, x1), o.z, o.z + o.length, 0.02)],
        TERRAIN,
        (0.38, 0.45, 0.22),
        "grass",
    )


def draw_wall(canvas: Canvas, world: World, o: Obj) -> None:
    x0, x1 = sorted((o.x, o.x + o.params["side"] * 0.3))
    _box(
        canvas,
        x0,
        x1,
        0.0,
        o.params["height"],
        o.z,
        o.z + o.length,
        WALL,
        o.params["color"],
        "concrete",
        world.sun_side,
    )


def draw_fence(canvas: Canvas, world: World, o: Obj) -> None:
    p = o.params
    h, z0, z1 = p["height"], o.z, o.z + o.length
    quads = [_quad_x(o.x, z, z + 0.1, 0.0, h + 0.05) for z in np.arange(z0, z1, 2.4)]  # posts
    rails = (0.15, h * 0.5, h - 0.1) if p["style"] == "rails" else (0.12, h - 0.15)
    quads += [_quad_x(o.x, z0, z1, y, y + 0.07) for y in rails]
    if p["style"] == "picket":
        zs = np.arange(z0, z1, p["picket"] + p["gap"])
        pickets = np.stack([_quad_x(o.x, z, z + p["picket"], 0.02, h) for z in zs])
        quads = np.concatenate([np.stack(quads), pickets])
    canvas.quads(np.asarray(quads), FENCE, p["color"], "metal")


def draw_hedge(canvas: Canvas, world: World, o: Obj) -> None:
    tops = o.params["tops"]
    zs = np.linspace(o.z, o.z + o.length, len(tops))
    pts = np.concatenate(
        [
            [[o.x, 0.0, o.z]],
            np.stack([np.full_like(zs, o.x), tops, zs], 1),
            [[o.x, 0.0, o.z + o.length]],
        ]
    )
    canvas.polys([pts], VEG, o.params["color"], "foliage")


def _crown(world: World, o: Obj, size: int) -> np.ndarray:
    """Object-space crown density (float32, size x size), cached per tree so frames agree."""
    key = (o.params["seed"], size)
    if key not in world.crown_cache:
        rng = np.random.default_rng(o.params["seed"])
        yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
        density = 1.0 - np.sqrt(xx**2 + (yy * 1.15) ** 2)
        for cells, amp in ((4, 0.35), (10, 0.25), (size // 6, 0.18), (size // 2, 0.12)):
            grid = rng.standard_normal((max(cells, 2), max(cells, 2))).astype(np.float32)
            density += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        world.crown_cache[key] = density.astype(np.float32)
    return world.crown_cache[key]


def draw_tree(canvas: Canvas, world: World, o: Obj) -> None:
    p, cam = o.params, canvas.cam
    base = np.array([o.x, 0.0, o.z])
    canvas.segment(
        base,
        base + np.array([0, p["trunk_h"] + p["radius"] * 0.5, 0]),
        p["trunk_w"],
        VEG,
        p["trunk"],
        "facade",
    )
    centre = cam.to_camera(np.array([o.x, p["trunk_h"] + p["radius"], o.z]))
    if centre[2] < NEAR + p["radius"]:
        return
    u, v = cam.image_xy(centre)
    diameter = round(float(2 * p["radius"] * cam.focal / centre[2]))
    if diameter < 2:
        return
    density = _crown(world, o, int(np.clip(2 * p["radius"] * 48, 32, 320)))
    mask = cv2.resize(density, (diameter, diameter), interpolation=cv2.INTER_LINEAR) > 0.3
    index = canvas.part(VEG, p["color"], "foliage", float(centre[2]))
    canvas.mask(round(float(u - diameter / 2)), round(float(v - diameter / 2)), mask, index)


def draw_lamp(canvas: Canvas, world: World, o: Obj) -> None:
    p = o.params
    top = np.array([o.x, p["height"], o.z])
    grey = (0.42, 0.43, 0.45)
    canvas.segment([o.x, 0.0, o.z], top, 0.16, POLE, grey, "metal")
    tip = top + np.array([-p["side"] * p["arm"], 0.25, 0.0])
    canvas.segment(top, tip, 0.08, POLE, grey, "metal")
    canvas.segment(
        tip, tip + np.array([-p["side"] * 0.5, -0.05, 0]), 0.18, POLE, (0.3, 0.3, 0.3), "metal"
    )


def draw_sign(canvas: Canvas, world: World, o: Obj) -> None:
    p = o.params
    canvas.segment(
        [o.x, 0.0, o.z],
        [o.x, p["height"] + p["size"] / 2, o.z],
        0.07,
        POLE,
        (0.5, 0.5, 0.52),
        "metal",
    )
    faces = [(p["height"], p["shape"])]
    if p["second"]:
        faces.append((p["height"] - p["size"] * 0.9, "rect"))
    for y, shape in faces:
        c = canvas.cam.to_camera(np.array([o.x, y, o.z - 0.05]))
        if c[2] < NEAR:
            continue
        u, v = canvas.cam.image_xy(c)
        r = (
            0.5
            * p["size"]
            * canvas.cam.focal
            / c[2]
            * (0.8 if shape == "rect" and y != p["height"] else 1.0)
        )
        if shape == "circle":
            pts = np.stack(
                [
                    u + r * np.cos(np.linspace(0, 6.28, 24)),
                    v + r * np.sin(np.linspace(0, 6.28, 24)),
                ],
                1,
            )
        elif shape == "triangle":
            pts = np.array([[u, v - r], [u + r, v + 0.75 * r], [u - r, v + 0.75 * r]])
        elif shape == "diamond":
            pts = np.array([[u, v - r], [u + r, v], [u, v + r], [u - r, v]])
        else:
            pts = np.array(
                [
                    [u - r, v - 0.6 * r],
                    [u + r, v - 0.6 * r],
                    [u + r, v + 0.6 * r],
                    [u - r, v + 0.6 * r],
                ]
            )
        canvas.fill_px([pts], canvas.part(SIGN, (0.9, 0.9, 0.9), "paint", float(c[2])))
        face = p["face"] if y == p["height"] else (0.1, 0.3, 0.7)
        canvas.fill_px(
            [np.array([u, v]) + 0.75 * (pts - [u, v])],
            canvas.part(SIGN, face, "paint", float(c[2])),
        )


def draw_traffic_light(canvas: Canvas, world: World, o: Obj) -> None:
    p = o.params
    grey = (0.35, 0.36, 0.37)
    canvas.segment([o.x, 0.0, o.z], [o.x, p["height"], o.z], 0.12, POLE, grey, "metal")
    x = o.x
    if p["mast"]:
        canvas.segment(
            [o.x, p["height"] - 0.2, o.z],
            [p["mast"], p["height"] - 0.2, o.z],
            0.1,
            POLE,
            grey,
            "metal",
        )
        x = p["mast"]
    top = p["height"] + (0.0 if p["mast"] else 0.9)
    box = _quad_z(o.z - 0.15, x - 0.16, x + 0.16, top - 0.9, top)
    canvas.polys([box], LIGHT, (0.08, 0.08, 0.08), "metal")
    c = canvas.cam.to_camera(np.array([x, top - 0.15 - 0.3 * p["lit"], o.z - 0.16]))
    if c[2] > NEAR:
        u, v = canvas.cam.image_xy(c)
        r = 0.1 * canvas.cam.focal / c[2]
        lamp = ((1.0, 0.1, 0.05), (1.0, 0.7, 0.1), (0.1, 1.0, 0.4))[p["lit"]]
        pts = np.stack(
            [u + r * np.cos(np.linspace(0, 6.28, 12)), v + r * np.sin(np.linspace(0, 6.28, 12))], 1
        )
        canvas.fill_px([pts], canvas.part(LIGHT, lamp, "lamp", float(c[2])))


def _billboard(canvas: Canvas, x: float, y: float, z: float):
    """Screen position and metres-to-pixels scale of a point, for upright flat figures."""
    c = canvas.cam.to_camera(np.array([x, y, z]))
    if c[2] < NEAR + 0.3:
        return None
    u, v = canvas.cam.image_xy(c)
    return u, v, canvas.cam.focal / c[2], float(c[2])


def draw_person(
    canvas: Canvas, world: World, o: Obj, t: float = 0.0, y0: float = 0.0, seated: bool = False
) -> None:
    p = o.params
    at = _billboard(canvas, o.x, y0, o.z_at(t))
    if at is None:
        return
    u, v, s, depth = at
    h = p["height"]
    label = p["label"] if not seated else RIDER
    swing = 0.18 * math.sin(p["phase"] + 6.0 * t) if abs(o.vz) > 0.2 else 0.05

    def px(pts):
        return np.array([[u + s * a, v - s * b] for a, b in pts])

    hip, shoulder = 0.53 * h, 0.82 * h
    if seated:
        legs = [
            [(-0.16, hip), (-0.05, hip), (-0.05, 0.25 * h), (-0.14, 0.25 * h)],
            [(0.05, hip), (0.16, hip), (0.14, 0.25 * h), (0.05, 0.25 * h)],
        ]
    else:
        legs = [
            [(-0.14, hip), (-0.02, hip), (-0.03 + swing, 0.0), (-0.13 + swing, 0.0)],
            [(0.02, hip), (0.14, hip), (0.13 - swing, 0.0), (0.03 - swing, 0.0)],
        ]
    canvas.fill_px([px(leg) for leg in legs], canvas.part(label, p["pants"], "cloth", depth))
    torso = [(-0.2, hip), (0.2, hip), (0.22, shoulder), (-0.22, shoulder)]
    arms = [
        [
            (-0.24, shoulder),
            (-0.18, shoulder),
            (-0.2 - swing / 2, hip - 0.05),
            (-0.27 - swing / 2, hip - 0.05),
        ],
        [
            (0.18, shoulder),
            (0.24, shoulder),
            (0.27 + swing / 2, hip - 0.05),
            (0.2 + swing / 2, hip - 0.05),
        ],
    ]
    canvas.fill_px(
        [px(torso), *[px(a) for a in arms]], canvas.part(label, p["shirt"], "cloth", depth)
    )
    head = px([(0.0, shoulder + 0.13 * h / 1.75)])[0]
    r = 0.11 * s
    pts = np.stack(
        [
            head[0] + r * np.cos(np.linspace(0, 6.28, 16)),
            head[1] + 1.2 * r * np.sin(np.linspace(0, 6.28, 16)),
        ],
        1,
    )
    canvas.fill_px([pts], canvas.part(label, p["skin"], "cloth", depth))


def draw_bike(canvas: Canvas, world: World, o: Obj, t: float = 0.0) -> None:
    p = o.params
    z = o.z_at(t)
    label = MOTORCYCLE if p["motor"] else BICYCLE
    wheel_r = 0.33 if p["motor"] else 0.34
    tube = 0.09 if p["motor"] else 0.035
    if p["facing"] == "side":  # frame in the plane X = x, wheels foreshortened
        rear, front = np.array([o.x, wheel_r, z]), np.array([o.x, wheel_r, z + 1.1])
        seat, bar = rear + np.array([0, 0.55, 0.35]), front + np.array([0, 0.7, -0.15])
        crank = rear + np.array([0, 0.0, 0.5])
        for a, b in (
            (rear, seat),
            (seat, crank),
            (crank, rear),
            (seat, bar),
            (bar, front),
            (crank, bar - np.array([0, 0.2, 0])),
        ):
            canvas.segment(a, b, tube, label, p["color"], "metal")
        angles = np.linspace(0, 2 * np.pi, 20)
        for centre in (rear, front):
            ring = centre + np.stack(
                [np.zeros(20), wheel_r * np.cos(angles), wheel_r * np.sin(angles)], 1
            )
            cam = canvas.cam.to_camera(ring)
            if (cam[:, 2] > NEAR).all():
                xy = canvas.cam.image_xy(cam)
                thick = max(
                    1,
                    round(
                        float(canvas.cam.focal * (0.1 if p["motor"] else 0.04) / cam[:, 2].mean())
                    ),
                )
                index = canvas.part(label, (0.06, 0.06, 0.06), "metal", float(cam[:, 2].mean()))
                cv2.polylines(
                    canvas.parts,
                    [np.round(xy * _SCALE).astype(np.int32)],
                    True,
                    index,
                    thick,
                    cv2.LINE_8,
                    SHIFT,
                )
        if p["motor"]:
            canvas.polys([_quad_x(o.x, z + 0.25, z + 0.9, 0.35, 0.8)], label, p["color"], "metal")
    else:  # seen from behind: thin wheel, frame, handlebar
        canvas.segment(
            [o.x, 0.0, z],
            [o.x, 2 * wheel_r, z],
            0.06 if not p["motor"] else 0.14,
            label,
            (0.06, 0.06, 0.06),
            "metal",
        )
        canvas.segment(
            [o.x, 2 * wheel_r, z], [o.x, 0.95, z + 0.4], tube, label, p["color"], "metal"
        )
        canvas.segment(
            [o.x - 0.3, 1.0, z + 0.9],
            [o.x + 0.3, 1.0, z + 0.9],
            0.03,
            label,
            (0.1, 0.1, 0.1),
            "metal",
        )
        if p["motor"]:
            canvas.polys(
                [_quad_z(z - 0.05, o.x - 0.22, o.x + 0.22, 0.4, 0.85)], label, p["color"], "metal"
            )
    if p["rider"] is not None:
        rider = p["rider"]
        rider.x, rider.z, rider.vz = o.x, o.z + 0.3, o.vz
        draw_person(canvas, world, rider, t, y0=0.45, seated=True)


def draw_vehicle(canvas: Canvas, world: World, o: Obj, t: float = 0.0) -> None:
    p = o.params
    label = {"car": CAR, "truck": TRUCK, "bus": BUS, "train": TRAIN}[o.kind]
    z0 = o.z_at(t)
    w, length, h = p["w"], p["l"], p["h"]
    x0, x1, z1 = o.x - w / 2, o.x + w / 2, z0 + length
    canvas.ground_shadow([_ground(x0 - 0.15, x1 + 0.15, z0 - 0.2, z1 + 0.2)], 150)
    if o.kind == "car":
        _box(canvas, x0, x1, 0.25, 0.55 * h, z0, z1, CAR, p["color"], "metal", world.sun_side)
        inset = 0.12
        cz0, cz1 = (
            z0 + length * (0.28 if p["facing"] > 0 else 0.22),
            z1 - length * (0.22 if p["facing"] > 0 else 0.28),
        )
        _box(
            canvas,
            x0 + inset,
            x1 - inset,
            0.55 * h,
            h,
            cz0,
            cz1,
            CAR,
            p["glass"],
            "glass",
            world.sun_side,
        )
        canvas.polys(
            [_ground(x0 + inset, x1 - inset, cz0, cz1, h + 0.01)], CAR, p["color"], "metal"
        )
    elif o.kind == "truck":
        cab = 2.0
        front_z0 = z0 if p["facing"] < 0 else z1 - cab
        _box(
            canvas,
            x0,
            x1,
            0.3,
            h * 0.8,
            front_z0,
            front_z0 + cab,
            TRUCK,
            p["color"],
            "metal",
            world.sun_side,
        )
        body_z0 = z0 + cab if p["facing"] < 0 else z0
        _box(
            canvas,
            x0,
            x1,
            0.4,
            h,
            body_z0,
            body_z0 + length - cab - 0.2,
            TRUCK,
            _shade(p["color"], 0.9),
            "metal",
            world.sun_side,
        )
    else:
        _box(canvas, x0, x1, 0.3, h, z0, z1, label, p["color"], "metal", world.sun_side)
        side_x = x0 if canvas.cam.x < x0 else x1 if canvas.cam.x > x1 else None
        if side_x is not None:
            xw = side_x - 0.02 * (1 if canvas.cam.x < x0 else -1)
            canvas.polys(
                [_quad_x(xw, z0 + 0.8, z1 - 0.8, h * 0.5, h * 0.85)], label, p["glass"], "glass"
            )
    # wheels: dark ellipses under the body on the visible side
    side_x = x0 if canvas.cam.x < x0 else x1 if canvas.cam.x > x1 else None
    r = 0.33 if o.kind == "car" else 0.5
    if side_x is not None:
        for wz in (z0 + 0.9, z1 - 0.9):
            q = _quad_x(side_x + (0.01 if side_x == x1 else -0.01), wz - r, wz + r, 0.0, 2 * r)
            canvas.polys([q], label, (0.05, 0.05, 0.05), "metal")
    end_z = z0 if canvas.cam.z < z0 else None
    if end_z is not None:  # rear (or front) details: lights, plate
        cz = end_z - 0.01
        canvas.polys(
            [
                _quad_z(cz, x0 + 0.1, x0 + 0.35, 0.6, 0.8),
                _quad_z(cz, x1 - 0.35, x1 - 0.1, 0.6, 0.8),
            ],
            label,
            (0.7, 0.05, 0.05) if p["facing"] > 0 else (0.95, 0.95, 0.85),
            "paint",
        )
        canvas.polys(
            [_quad_z(cz, o.x - 0.26, o.x + 0.26, 0.38, 0.5)], label, (0.9, 0.9, 0.88), "paint"
        )
        canvas.polys([_quad_z(cz, x0, x1, 0.0, 0.25)], label, (0.04, 0.04, 0.04), "metal")


def draw_bin(canvas: Canvas, world: World, o: Obj) -> None:
    _box(
        canvas,
        o.x - 0.3,
        o.x + 0.3,
        0.0,
        1.0,
        o.z,
        o.z + 0.6,
        STATIC,
        o.params["color"],
        "metal",
        world.sun_side,
    )


DRAW_STATIC = {
    "building": draw_building,
    "terrain": draw_terrain,
    "wall": draw_wall,
    "fence": draw_fence,
    "hedge": draw_hedge,
    "tree": draw_tree,
    "lamp": draw_lamp,
    "sign": draw_sign,
    "traffic_light": draw_traffic_light,
    "bin": draw_bin,
}
DRAW_MOVING = {
    "person": draw_person,
    "bike": draw_bike,
    "car": draw_vehicle,
    "truck": draw_vehicle,
    "bus": draw_vehicle,
    "train": draw_vehicle,
}


def _draw_objects(canvas: Canvas, world: World, objects: list[Obj], t: float, view: float) -> None:
    cam = canvas.cam
    visible = []
    for o in objects:
        z0 = o.z_at(t) if o.vz else o.z
        near = z0 - cam.z
        if near + o.length < -2.0 or near > view:
            continue
        # Draw order: farthest first, by the object's nearest point (Euclidean in the ground plane).
        dz = max(0.0, near) if near > 0 else min(0.0, near + o.length)
        visible.append((math.hypot(o.x - cam.x, dz), o))
    for _, o in sorted(visible, key=lambda item: -item[0]):
        if o.kind in DRAW_MOVING:
            DRAW_MOVING[o.kind](canvas, world, o, t)
        else:
            DRAW_STATIC[o.kind](canvas, world, o)


def _sun_shadows(canvas: Canvas, world: World) -> None:
    """Buildings on the sun's side shade the street; trees drop dappled shade."""
    if world.style != "sunny":
        return
    polys = []
    for o in world.frontage:
        if o.kind == "building" and o.params["side"] == world.sun_side:
            reach = -world.sun_side * o.params["height"] * 0.6
            polys.append(
                np.array(
                    [
                        [o.x, 0.0, o.z],
                        [o.x, 0.0, o.z + o.length],
                        [o.x + reach, 0.0, o.z + o.length + 4.0],
                        [o.x + reach, 0.0, o.z + 4.0],
                    ]
                )
            )
    canvas.ground_shadow(polys, 200)


def _draw_hood(canvas: Canvas, world: World) -> None:
    h, w = canvas.h, canvas.w
    top = h * (1.0 - world.ego_hood)
    xs = np.linspace(0, w, 33)
    ys = top + (h * world.ego_hood * 0.5) * ((xs - w / 2) / (w / 2)) ** 2
    pts = np.concatenate([np.stack([xs, ys], 1), [[w, h], [0, h]]])
    canvas.fill_px([pts], canvas.part(EGO, (0.15, 0.15, 0.17), "metal", 1.0))


# --------------------------------------------------------------------------------------------
# Composition: textures, lighting, camera nuisances


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.standard_normal((max(2, h // cell), max(2, w // cell)), dtype=np.float32)
    return cv2.resize(
        small, (w, h), interpolation=cv2.INTER_LINEAR if cell < 16 else cv2.INTER_CUBIC
    )


def compose(canvas: Canvas, world: World, rng: np.random.Generator) -> np.ndarray:
    """The RGB uint8 picture of a painted canvas: textures, sky, shadows, light, haze, sensor.

    Material textures and clouds come from the world's texture seed (steady over a drive);
    ``rng`` only draws the sensor noise of this frame.
    """
    look = world.look
    h, w = canvas.h, canvas.w
    sensor_rng, rng = rng, np.random.default_rng(look["texture_seed"])
    parts = canvas.parts
    amplitudes = _AMPLITUDES[np.array(canvas.materials)][parts]  # (H, W, 3)
    albedo = np.array(canvas.colors, dtype=np.float32)[parts]
    tex = 1.0 + amplitudes[..., 0] * rng.standard_normal((h, w), dtype=np.float32)
    tex += amplitudes[..., 1] * _noise(rng, h, w, 4)
    tex += amplitudes[..., 2] * _noise(rng, h, w, 32)
    img = albedo * tex[..., None]
    labels = np.array(canvas.labels, dtype=np.uint8)[parts]
    foliage = np.array(canvas.materials)[parts] == MATERIAL_INDEX["foliage"]
    img[..., 1] += foliage * 0.06 * _noise(rng, h, w, 3)  # leaf hue flicker
    style = world.style
    sky = labels == SKY
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    zenith, horizon = {
        "sunny": ((0.25, 0.45, 0.85), (0.7, 0.8, 0.92)),
        "overcast": ((0.72, 0.74, 0.78), (0.88, 0.89, 0.9)),
        "dusk": ((0.15, 0.18, 0.35), (0.95, 0.55, 0.3)),
        "hazy": ((0.7, 0.75, 0.8), (0.85, 0.86, 0.86)),
        "rainy": ((0.45, 0.47, 0.5), (0.62, 0.63, 0.65)),
    }[style]
    grad = np.clip(rows / max(world.horizon, 0.05), 0, 1)
    sky_rgb = np.array(zenith, np.float32) * (1 - grad) + np.array(horizon, np.float32) * grad
    clouds = np.clip(_noise(rng, h, w, 64) * 0.6 + _noise(rng, h, w, 16) * 0.2, 0, 1)[..., None]
    sky_img = sky_rgb + clouds * (0.95 - sky_rgb) * (0.9 if style != "sunny" else 0.6)
    img = np.where(sky[..., None], sky_img, img)
    shadow = canvas.shadow
    if shadow.any():
        soft = cv2.GaussianBlur(shadow, (0, 0), max(1.0, w / 1024)) * _GROUND_LABELS[labels]
        img *= (1.0 - soft.astype(np.float32) * (0.55 / 255.0))[..., None]
    if style != "sunny":
        img = np.where(sky[..., None], img, img * np.array(world.light, np.float32))
    else:
        img *= np.array(world.light, np.float32)
    if style == "hazy":
        cam = canvas.cam
        v = np.arange(h, dtype=np.float32) - cam.cy
        row_depth = np.where(v > 1, cam.focal * cam.height / np.maximum(v, 1), 1e4).astype(
            np.float32
        )
        depth = np.where(
            _GROUND_LABELS[labels], row_depth[:, None], np.array(canvas.depths, np.float32)[parts]
        )
        fog = np.exp(-depth / look["haze"])[..., None]
        img = img * fog + np.array(horizon, np.float32) * (1 - fog)
    lamp = np.array(canvas.materials)[parts] == MATERIAL_INDEX["lamp"]
    exposure = {"sunny": 1.0, "overcast": 0.95, "dusk": 0.7, "hazy": 1.0, "rainy": 0.85}[style]
    img = img * exposure * look["exposure"]
    img[lamp] = np.array(canvas.colors, np.float32)[parts[lamp]]
    img = np.clip(img, 0, 1) ** (1 / look["gamma"])  # camera tone curve
    yy, xx = np.ogrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
    img *= (1.0 - look["vignette"] * (xx**2 + yy**2) / 2)[..., None].astype(np.float32)
    out = img * 255.0
    sigma = look["blur"] * w / 2048 + (0.6 if style == "rainy" else 0.0)
    out = cv2.GaussianBlur(out, (0, 0), sigma)
    noise_level = {"dusk": 6.0, "rainy": 4.0}.get(style, 2.0) * look["noise"]
    out += sensor_rng.standard_normal(out.shape, dtype=np.float32) * noise_level
    out = np.clip(out, 0, 255).astype(np.uint8)
    if look["jpeg"]:  # JPEG artefacts, as in dash-cam footage
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, look["jpeg"]])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


# --------------------------------------------------------------------------------------------
# Public API


@dataclass
class Frame:
    """One rendered frame: RGB image (H, W, 3) uint8 and labels as Cityscapes label ids (H, W)."""

    image: np.ndarray
    label_ids: np.ndarray

    @property
    def train_ids(self) -> np.ndarray:
        return ID_TO_TRAIN_ID[self.label_ids]


def make_camera(
    world: World, size: tuple[int, int], x: float = 0.0, z: float = 0.0, yaw: float = 0.0
) -> Camera:
    """Camera of a Cityscapes-like rig scaled to ``size`` = (width, height): focal 1.1 x width."""
    width, height = size
    return Camera(
        width,
        height,
        1.1 * width,
        width / 2.0,
        world.horizon * height,
        x,
        world.camera_height,
        z,
        yaw,
    )


def render(world: World, camera: Camera, t: float, rng: np.random.Generator) -> Frame:
    """Paint the world seen by ``camera`` at time ``t`` (seconds; moving objects move)."""
    canvas = Canvas(camera)
    draw_skyline(canvas, world)
    draw_ground(canvas, world)
    _sun_shadows(canvas, world)
    _draw_objects(canvas, world, world.frontage, t, view=400.0)
    _draw_objects(canvas, world, world.objects, t, view=250.0)
    _draw_hood(canvas, world)
    image = compose(canvas, world, rng)
    return Frame(image, np.array(canvas.labels, dtype=np.uint8)[canvas.parts])


def generate_scene(seed, size: tuple[int, int] = (2048, 1024)) -> Frame:
    """One independent street scene; ``seed`` is anything ``numpy.random.default_rng`` takes."""
    rng = np.random.default_rng(seed)
    world = build_world(rng)
    camera = make_camera(world, size, x=rng.uniform(-0.4, 0.4), yaw=rng.normal(0.0, 0.04))
    return render(world, camera, 0.0, rng)


class Drive:
    """Consecutive frames of one drive: the camera moves at ``speed`` m/s, sampled at ``fps``.

    The world, lighting style and traffic come from ``seed``; frame i is rendered at
    t = i / fps with its own nuisance seed, so any frame can be rendered alone (parallel workers).
    """

    def __init__(
        self, seed: int, frames: int, fps: float = 15.0, size=(2048, 1024), speed: float = 10.0
    ):
        if fps <= 0 or frames <= 0:
            raise ValueError("frames and fps must be positive")
        self.seed, self.frames, self.fps, self.size, self.speed = seed, frames, fps, size, speed
        rng = np.random.default_rng([seed, 1])
        self.world = build_world(rng, length=speed * frames / fps, ego_speed=speed)
        self.sway = rng.uniform(0.0, 6.28)

    def camera(self, index: int) -> Camera:
        t = index / self.fps
        x = 0.25 * math.sin(0.3 * t + self.sway)  # gentle lane wobble and matching heading
        yaw = 0.25 * 0.3 * math.cos(0.3 * t + self.sway) / max(self.speed, 1e-3)
        return make_camera(self.world, self.size, x=x, z=self.speed * t, yaw=yaw)

    def frame(self, index: int) -> Frame:
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} outside 0..{self.frames - 1}")
        return render(
            self.world,
            self.camera(index),
            index / self.fps,
            np.random.default_rng([self.seed, 2, index]),
        )
