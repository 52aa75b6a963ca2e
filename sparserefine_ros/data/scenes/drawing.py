"""Painting the street into the canvas's part map: drawing primitives, the ground, the
skyline and the static parts (buildings, walls, fences, vegetation, poles, signs, lights)."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np

from .camera import (
    BUILDING,
    FENCE,
    GROUND,
    LIGHT,
    NEAR,
    PARKING,
    POLE,
    ROAD,
    SIDEWALK,
    SIGN,
    STATIC,
    TERRAIN,
    VEG,
    WALL,
    Canvas,
)
from .world import Obj, World, _in_crossing


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
