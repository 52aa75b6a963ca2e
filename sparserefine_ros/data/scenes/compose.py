"""Composition: the picture from the part map, with textures, lighting and camera nuisances."""

from __future__ import annotations

import cv2
import numpy as np

from .camera import _AMPLITUDES, _GROUND_LABELS, MATERIAL_INDEX, SKY, Canvas
from .world import World


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
