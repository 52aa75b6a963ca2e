"""Painting road users: pedestrians, bikes with their riders, vehicles (all may move)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .camera import (
    _SCALE,
    BICYCLE,
    BUS,
    CAR,
    MOTORCYCLE,
    NEAR,
    RIDER,
    SHIFT,
    TRAIN,
    TRUCK,
    Canvas,
)
from .drawing import _box, _ground, _quad_x, _quad_z, _shade
from .world import Obj, World


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


DRAW_MOVING = {
    "person": draw_person,
    "bike": draw_bike,
    "car": draw_vehicle,
    "truck": draw_vehicle,
    "bus": draw_vehicle,
    "train": draw_vehicle,
}
