"""Painting a rendered face into a photo-like one: skin detail, eyes, hair, background and
occluders (sunglasses, eyeglasses, hats, hands, microphones), each seeded.

:class:`SurfaceMap` fixes where features sit on the mesh; :class:`FacePainter` paints one face
of :class:`~sgpn.data.synthetic.SyntheticFaces` with the 2D kit of :mod:`sgpn.data.procedural`.
"""

from __future__ import annotations

import math

import torch
from pytorch3d.ops import interpolate_face_attributes
from torch import Tensor

from sgpn.data.procedural import (Draws, FaceFrame, blur, noise_1d, over, sd_box, sd_capsule, sd_ellipse,
                                  sd_superellipse, smoothstep)
from sgpn.face3d.face_model import FaceModel

OCCLUDERS = ("sunglasses", "eyeglasses", "hat", "hand", "microphone")

HAIR_COLOURS = (
    (0.04, 0.035, 0.03), (0.12, 0.08, 0.05), (0.25, 0.16, 0.09), (0.40, 0.22, 0.10),
    (0.55, 0.40, 0.22), (0.78, 0.64, 0.40), (0.55, 0.53, 0.50), (0.82, 0.80, 0.76),
)
HAIR_WEIGHTS = (0.22, 0.22, 0.18, 0.08, 0.1, 0.1, 0.06, 0.04)
SKIN_TONES = ((0.93, 0.76, 0.65), (0.84, 0.64, 0.50), (0.70, 0.50, 0.36), (0.52, 0.35, 0.24),
              (0.35, 0.23, 0.16))
FRAME_COLOURS = ((0.03, 0.03, 0.03), (0.28, 0.16, 0.08), (0.75, 0.62, 0.32), (0.72, 0.72, 0.74),
                 (0.55, 0.08, 0.08), (0.10, 0.16, 0.45))
LENS_TINTS = ((0.08, 0.08, 0.08), (0.16, 0.10, 0.05), (0.06, 0.12, 0.08), (0.05, 0.08, 0.16))


class SurfaceMap:
    """Per-vertex attributes of the neutral face, for PyTorch3D to interpolate per pixel.

    ``u, v``: the vertex's neutral position in face units (origin between the eyes, one unit =
    the distance between the eye centres, ``v`` down), a texture coordinate that follows the
    skin through any expression or pose; ``skin``: the model's skin mask; ``eye``: inside the
    eye landmarks' outline. Computed from the model's landmarks, so it fits any model with the
    iBUG-68 layout (the open model or the BFM).
    """

    ATTRIBUTES = ("u", "v", "skin", "eye")

    def __init__(self, model: FaceModel):
        shape = model.mean_shape.view(-1, 3)[:, :2]
        marks = shape[model.landmark_index]
        left, right = marks[36:42].mean(0), marks[42:48].mean(0)
        unit = (right - left).norm()
        uv = (shape - (left + right) / 2) / unit * torch.tensor([1.0, -1.0])
        marks_uv = uv[model.landmark_index]
        eyes = [inside_polygon(uv, marks_uv[36:42]), inside_polygon(uv, marks_uv[42:48])]
        attributes = torch.cat([uv, model.skin_mask.float()[:, None], (eyes[0] | eyes[1]).float()[:, None]], 1)
        self.face_attributes = attributes[model.faces]  # (F, 3, D)
        # Irises: the dark albedo inside each eye outline (centre, and the radius of a disk
        # with the same second moment).
        luminance = model.mean_tex.view(-1, 3) @ torch.tensor([0.299, 0.587, 0.114])
        centres, radii = [], []
        for inside in eyes:
            lum = luminance[inside]
            dark = uv[inside][lum < 0.5 * (lum.quantile(0.1) + lum.quantile(0.9))]
            centres.append(dark.mean(0))
            radii.append((2 * ((dark - centres[-1]) ** 2).sum(1).mean()).sqrt())
        self.iris_centres, self.iris_radii = torch.stack(centres), torch.stack(radii)  # (2, 2), (2,)

    def at_pixels(self, fragments) -> dict[str, Tensor]:
        """The attributes at every pixel of a single render, each ``(S, S)`` (0 off the face)."""
        values = interpolate_face_attributes(fragments.pix_to_face, fragments.bary_coords,
                                             self.face_attributes)[0, :, :, 0]
        return dict(zip(self.ATTRIBUTES, values.unbind(-1)))


def inside_polygon(points: Tensor, polygon: Tensor) -> Tensor:
    """Even-odd test of points ``(N, 2)`` against a closed polygon ``(K, 2)``."""
    near = ((points >= polygon.amin(0)) & (points <= polygon.amax(0))).all(1).nonzero()[:, 0]
    result = torch.zeros(len(points), dtype=torch.bool)
    x, y = points[near, 0:1], points[near, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = polygon.roll(-1, 0)[:, 0], polygon.roll(-1, 0)[:, 1]
    crosses = (y0 > y) != (y1 > y)
    x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0 + 1e-12)
    result[near] = ((crosses & (x < x_cross)).sum(1) % 2) == 1
    return result


class FacePainter:
    """Paints one item of ``dataset`` (a :class:`~sgpn.data.synthetic.SyntheticFaces`): every
    random draw happens here, in a fixed order."""

    def __init__(self, dataset, draws: Draws, render):
        self.dataset, self.draws = dataset, draws
        self.size = dataset.size
        self.render = render
        self.mask = render.mask[0]  # (1, S, S)
        self.frame = FaceFrame(render.landmarks[0], self.size)
        self.surface = dataset.surface.at_pixels(render.fragments)
        skin = (self.surface["skin"] > 0.5) & (self.mask[0] > 0)
        face = render.image[0]
        self.skin_colour = (face[:, skin].mean(1) if skin.any() else face.mean((1, 2))).clamp(0.05, 1)
        self.hair_colour = draws.jitter(draws.choice(HAIR_COLOURS, HAIR_WEIGHTS), 0.04)

    def paint(self) -> dict:
        d = self.draws
        face = self._skin_detail(self.render.image[0])
        face = self._eyes(face)
        image = self._background()
        image = self._neck_and_clothes(image)
        hair_image, hair_back, hair_front, hair_shadow = self._hair()
        image = over(image, hair_image, hair_back)
        # the face, with a one-pixel anti-aliased rim (colours carried just past the edge)
        rim = torch.maximum(self.mask, blur(self.mask))
        carried = blur(face * self.mask) / blur(self.mask).clamp_min(1e-6)
        image = over(image, torch.where(self.mask > 0, face, carried), rim)
        image = image * (1 - hair_shadow)
        image = over(image, hair_image, hair_front)

        occluded = torch.zeros_like(self.mask)
        kinds: list[str] = []
        if d.chance(self.dataset.occluder_prob):
            kinds = [d.choice(OCCLUDERS)]
            if d.chance(0.25):
                glasses = {"sunglasses", "eyeglasses"}
                kinds.append(d.choice([k for k in OCCLUDERS if k != kinds[0] and not {k, kinds[0]} <= glasses]))
            for kind in sorted(kinds, key=OCCLUDERS.index):  # glasses under hats and hands
                image, alpha = getattr(self, f"_{kind}")(image)
                occluded = torch.maximum(occluded, alpha)
        hq = (image.clamp(0, 1) * 255).round() / 255
        return dict(hq=hq, occluder_mask=((occluded > 0.5) & (self.mask > 0)).float(),
                    face_mask=self.mask.clone(),
                    occluders=torch.tensor([kind in kinds for kind in OCCLUDERS]))

    # -- the face ----------------------------------------------------------------------------

    def _skin_detail(self, face: Tensor) -> Tensor:
        d, s, S = self.draws, self.surface, self.size
        u, v = s["u"], s["v"]
        skin = (s["skin"] * self.mask[0]).clamp(0, 1)
        g = d.generator
        # fine grain: pores are about a pixel at these sizes
        grain = torch.randn(1, S, S, generator=g)
        if S >= 192:
            grain = blur(grain) * 1.5
        face = face * (1 + d.uniform(0.01, 0.035) * grain * skin)
        # mottling: blotchy colour variation a few pores wide
        mottle = d.noise(S, S / 6, channels=3) - 0.5
        mottle = 0.8 * mottle.mean(0, keepdim=True) + 0.2 * mottle
        face = face * (1 + d.uniform(0.04, 0.1) * mottle * skin)
        if d.chance(0.3):  # freckles over the nose and cheeks
            zone = torch.exp(-(u / d.uniform(0.7, 1.1)) ** 2 - ((v - 0.6) / 0.4) ** 2) * skin
            spots = d.noise(S, S / max(0.035 * self.frame.unit, 1.0))[0]
            threshold = d.uniform(0.72, 0.82)
            freckles = smoothstep(threshold, threshold + 0.06, spots) * zone
            face = face * (1 - d.uniform(0.15, 0.35) * freckles * torch.tensor([0.5, 0.7, 0.9])[:, None, None])
        if d.chance(0.25):  # stubble on the lower face
            beard = (smoothstep(0.0, 0.2, v - 0.75 - 0.4 * u.abs() ** 1.5)
                     * smoothstep(1.45, 1.2, u.abs()) * skin)
            density = d.uniform(0.2, 0.8)
            hairs = (torch.rand(S, S, generator=g) < density).float()
            hairs = 0.5 * hairs + 0.5 * blur(hairs[None])[0]
            amount = beard * (0.15 + 0.5 * hairs) * density
            face = face + amount * (0.8 * self.hair_colour[:, None, None] - face)
        return face

    def _eyes(self, face: Tensor) -> Tensor:
        d, s = self.draws, self.surface
        eye = (s["eye"] * self.mask[0]).clamp(0, 1)
        if not eye.any():
            return face
        centres, radii = self.dataset.surface.iris_centres, self.dataset.surface.iris_radii
        du = s["u"][None] - centres[:, 0, None, None]  # (2, S, S): offsets from both irises
        dv = s["v"][None] - centres[:, 1, None, None]
        distances = torch.hypot(du, dv) / radii[:, None, None]
        nearer = distances.argmin(0, keepdim=True)  # each pixel belongs to the nearer iris
        du, dv, rho = (t.gather(0, nearer)[0] for t in (du, dv, distances))
        radius = radii[nearer[0]]
        phi = torch.atan2(dv, du)
        iris = smoothstep(1.08, 0.95, rho) * eye
        fibres = noise_1d(phi / (2 * math.pi), 41, d.generator) - 0.5
        face = face * (1 + iris * d.uniform(0.3, 0.6) * fibres)
        face = face * (1 - 0.5 * iris * smoothstep(0.7, 1.0, rho))  # dark limbal ring
        pupil = smoothstep(0.46, 0.36, rho) * eye
        face = face + pupil * (0.02 - face)
        # catchlight: a small bright spot up and to the side of the pupil
        offset = d.uniform(-0.45, 0.45)
        spot = torch.hypot(du / radius - offset, dv / radius + 0.35) * radius * self.frame.unit
        spot_radius = max(0.22 * float(radius.max()) * self.frame.unit, 0.7)
        glint = (1 - spot / spot_radius).clamp(0, 1) * eye
        return face + glint * (1.0 - face)

    # -- around the face ---------------------------------------------------------------------

    def _background(self) -> Tensor:
        d, S, f = self.draws, self.size, self.frame
        top, bottom = d.colour(), d.colour()
        angle = d.uniform(0, 2 * math.pi)
        ramp = (math.cos(angle) * f.a + math.sin(angle) * f.b) / 4 + 0.5
        image = top[:, None, None] + ramp.clamp(0, 1)[None] * (bottom - top)[:, None, None]
        for _ in range(int(d.uniform(2, 6))):  # soft blobs: out-of-focus objects and lights
            centre = (d.uniform(-2.5, 2.5), d.uniform(-2, 2.5))
            radius = d.uniform(0.3, 1.5)
            blob = torch.exp(-((f.a - centre[0]) ** 2 + (f.b - centre[1]) ** 2) / radius**2)[None]
            image = over(image, d.colour(), d.uniform(0.3, 0.9) * blob)
        image = image * (0.85 + 0.3 * d.noise(S, d.uniform(2, 6), channels=1))
        if d.chance(0.4):  # a faint texture (wallpaper, foliage out of focus)
            image = image * (1 + d.uniform(0.05, 0.15) * (d.noise(S, S / d.uniform(3, 10)) - 0.5))
        return image

    def _neck_and_clothes(self, image: Tensor) -> Tensor:
        d, f = self.draws, self.frame
        chin = f.points[8]
        width = d.uniform(0.55, 0.75)
        neck = f.coverage(sd_box(f.a, f.b, (float(chin[0]), float(chin[1]) + 1.0), (width, 1.6), rounding=0.2))
        shade = 0.6 + 0.3 * smoothstep(chin[1] - 0.2, chin[1] + 0.8, f.b)[None]
        image = over(image, self.skin_colour[:, None, None] * shade, neck)
        collar = float(chin[1]) + d.uniform(0.5, 0.9) - 0.4 * smoothstep(0.6, 2.0, (f.a - chin[0]).abs())
        clothes = f.coverage(collar - f.b)
        colour = d.colour(value=(0.1, 0.8))[:, None, None] * (0.8 + 0.2 * d.noise(self.size, 4))
        return over(image, colour, clothes)

    def _hair(self):
        """Hair colour image, alphas behind and in front of the face, and the fringe's shadow."""
        d, f, S = self.draws, self.frame, self.size
        a, b = f.a, f.b
        style = d.choice(("short", "medium", "long", "bald"), (0.35, 0.3, 0.27, 0.08))
        volume = d.uniform(0.05, 0.3)
        crown = (d.uniform(-0.1, 0.1), d.uniform(-0.5, -0.25))
        skull = sd_ellipse(a, b, crown, (1.5 + volume, 1.75 + volume))
        if style == "bald":
            shade = (0.8 + 0.2 * smoothstep(0.0, -1.5, b) + 0.05 * (d.noise(S, S / 4) - 0.5))
            colour = self.skin_colour[:, None, None] * shade
            back = f.coverage(sd_ellipse(a, b, crown, (1.35, 1.6)))
            return colour, back, torch.zeros_like(back), torch.zeros_like(back)
        length = {"short": -0.2, "medium": d.uniform(0.8, 1.6), "long": d.uniform(2.2, 3.5)}[style]
        hanging = sd_box(a, b, (0.0, (length - 0.5) / 2), (1.45 + volume, (length + 0.5) / 2), rounding=0.3)
        silhouette = torch.minimum(skull, hanging)
        # hairline across the forehead, with a parting and ragged tips
        parting = d.uniform(-0.5, 0.5)
        height = d.uniform(0.5, 1.15)
        tips = (noise_1d(a / 3, max(int(S / 3), 8), d.generator) - 0.5) * d.uniform(0.04, 0.12)
        hairline = -height + d.uniform(0.08, 0.3) * (a - parting) ** 2 + tips
        front_region = b - hairline
        if style != "short":  # locks over the sides of the face
            side = d.uniform(0.95, 1.3) - 0.05 * b.clamp_min(0)
            front_region = torch.minimum(front_region, side - a.abs())
        front_region = torch.maximum(silhouette, front_region)  # within the silhouette only
        # strands radiate from the parting; clumps, a sheen band and darker roots
        radius = torch.hypot(a - parting, b - (crown[1] - 0.9))
        theta = (torch.atan2(b - (crown[1] - 0.9), a - parting) + d.uniform(-0.15, 0.15) * radius) / (2 * math.pi)
        strands = (0.6 * noise_1d(theta, max(int(S * 1.5), 64), d.generator)
                   + 0.4 * noise_1d(theta, max(int(S / 3), 16), d.generator))
        clumps = d.noise(S, d.uniform(3, 8))[0]
        sheen = torch.exp(-((radius - d.uniform(0.8, 1.4)) / 0.2) ** 2) * noise_1d(theta, 24, d.generator)
        depth = smoothstep(0.0, 0.3, -silhouette)  # darker where the hair thins out at its edge
        shade = (0.45 + 0.45 * strands) * (0.75 + 0.25 * clumps) * (0.7 + 0.3 * depth)
        hair = self.hair_colour[:, None, None]
        colour = hair * shade[None] + 0.25 * sheen[None] * (0.3 + hair)
        back = f.coverage(silhouette)
        front = f.coverage(front_region)
        shadow = 0.35 * torch.exp(-front_region.clamp_min(0) / 0.08)[None] * (front_region > 0)[None] * self.mask
        return colour, back, front, shadow

    # -- occluders: each returns the image and where it covers (alpha) ------------------------

    def _glasses(self, image: Tensor, dark: bool):
        d, f = self.draws, self.frame
        a, b = f.a, f.b
        rx, ry = d.uniform(0.36, 0.46), d.uniform(0.25, 0.34) * (1.0 if dark else 0.85)
        power = d.uniform(2.0, 5.0)
        drop, spread = d.uniform(0.0, 0.08), d.uniform(0.0, 0.04)
        thickness = max(d.uniform(0.03, 0.07) if dark else d.uniform(0.02, 0.045), 1.3 / f.unit)
        centres = [(float(f.points[36:42, 0].mean()) - spread, float(f.points[36:42, 1].mean()) + drop),
                   (float(f.points[42:48, 0].mean()) + spread, float(f.points[42:48, 1].mean()) + drop)]
        lenses = torch.minimum(*(sd_superellipse(a, b, c, (rx, ry), power) for c in centres))
        rims = lenses.abs() - thickness / 2
        y = min(c[1] for c in centres) - 0.4 * ry
        bridge = sd_capsule(a, b, (centres[0][0] + 0.8 * rx, y), (centres[1][0] - 0.8 * rx, y), thickness / 2)
        arms = torch.minimum(
            sd_capsule(a, b, (centres[0][0] - rx, y), (float(f.points[0, 0]) - 0.05, y + 0.1), thickness / 2),
            sd_capsule(a, b, (centres[1][0] + rx, y), (float(f.points[16, 0]) + 0.05, y + 0.1), thickness / 2))
        frame_alpha = f.coverage(torch.minimum(torch.minimum(rims, bridge), arms))
        lens_alpha = f.coverage(lenses)
        streak = torch.exp(-(((a + b) * 0.7 - d.uniform(-0.6, 0.6)) / 0.07) ** 2)[None] * lens_alpha
        if dark:
            tint = d.jitter(d.choice(LENS_TINTS), 0.03)
            gradient = 0.6 + 0.6 * smoothstep(y - ry, y + 2 * ry, b)[None]
            image = over(image, tint[:, None, None] * gradient, 0.93 * lens_alpha)
            image = over(image, torch.ones(3), 0.3 * streak)
            covered = torch.maximum(lens_alpha, frame_alpha)
        else:
            image = over(image, d.colour(value=(0.6, 1.0)), d.uniform(0.03, 0.1) * lens_alpha)
            image = over(image, torch.ones(3), d.uniform(0.1, 0.3) * streak)
            covered = frame_alpha
        colour = d.jitter(d.choice(FRAME_COLOURS), 0.05)
        shine = 1 + 0.3 * smoothstep(0.0, -thickness, rims + (b - y) * 0.02)[None]
        image = over(image, colour[:, None, None] * shine, frame_alpha)
        return image, covered

    def _sunglasses(self, image: Tensor):
        return self._glasses(image, dark=True)

    def _eyeglasses(self, image: Tensor):
        return self._glasses(image, dark=False)

    def _hat(self, image: Tensor):
        d, f, S = self.draws, self.frame, self.size
        a, b = f.a, f.b
        kind = d.choice(("cap", "beanie", "brimmed"))
        brows = float(f.points[17:27, 1].mean())
        middle = (self.mask[0] > 0) & (a.abs() < 0.6)
        face_top = float(b[middle].min()) if middle.any() else brows - 0.7
        # the crown's lower edge: between the brows and the top of the face, lower at the sides
        lowest = max(brows - d.uniform(0.2, 0.7), face_top + 0.15)
        edge = lowest + d.uniform(0.05, 0.15) * a**2
        crown = torch.maximum(b - edge, sd_ellipse(a, b, (0.0, brows - 1.0), (1.6, 2.2)))
        colour = d.colour(value=(0.1, 0.85))
        shade = (0.6 + 0.4 * (1 - (a / 1.8) ** 2).clamp(0, 1).sqrt()) * (0.85 + 0.15 * d.noise(S, 5)[0])
        if kind == "beanie":  # knitted ribs and a folded band
            shade = shade * (0.85 + 0.15 * torch.sin(a * d.uniform(25, 45)))
            shade = shade * (1 - 0.12 * (edge - b < 0.35).float())
        image = image * (1 - 0.4 * torch.exp(-(b - edge).clamp_min(0) / 0.25) * (b > edge))[None]
        alpha = f.coverage(crown)
        image = over(image, colour[:, None, None] * shade[None], alpha)
        if kind != "beanie":  # a cap's bill or a brim all round, darker underneath
            half_width = 1.2 if kind == "cap" else d.uniform(2.0, 2.6)
            depth = d.uniform(0.12, 0.3) if kind == "cap" else d.uniform(0.1, 0.2)
            across = b - edge - depth / 2 + 0.02  # from the middle of the brim's band
            brim = torch.maximum(across.abs() - depth / 2, a.abs() - half_width)
            brim_alpha = f.coverage(brim)
            under = 0.55 + 0.45 * smoothstep(depth / 2, -depth / 2, across)[None]
            image = over(image, colour[:, None, None] * under, brim_alpha)
            alpha = torch.maximum(alpha, brim_alpha)
        return image, alpha

    def _hand(self, image: Tensor):
        d, f = self.draws, self.frame
        a, b = f.a, f.b
        mouth = f.points[48:68].mean(0)
        where = d.choice(("cheek", "mouth", "chin"))
        side = d.choice((-1.0, 1.0))
        if where == "cheek":
            target = (side * d.uniform(0.6, 1.0), d.uniform(0.5, 1.1))
            angle = -math.pi / 2 + side * d.uniform(-0.5, 0.2)
        elif where == "mouth":
            target = (float(mouth[0]) + side * d.uniform(0.0, 0.3), float(mouth[1]) + d.uniform(-0.1, 0.1))
            angle = (math.pi if side > 0 else 0.0) + d.uniform(-0.35, 0.35)
        else:
            target = (float(f.points[8, 0]) + d.uniform(-0.3, 0.3), float(f.points[8, 1]) - d.uniform(0.0, 0.3))
            angle = -math.pi / 2 + d.uniform(-0.4, 0.4)
        scale = d.uniform(0.85, 1.15)
        forward = (math.cos(angle), math.sin(angle))
        across = (-forward[1], forward[0])
        palm_centre = (target[0] - forward[0] * 0.35 * scale, target[1] - forward[1] * 0.35 * scale)
        parts = [sd_ellipse(a, b, palm_centre, (0.5 * scale, 0.42 * scale), angle)]
        curl = 0.55 if where == "chin" else 1.0  # a fist under the chin
        for k, (offset, length) in enumerate(zip((-0.27, -0.09, 0.09, 0.26), (0.58, 0.68, 0.64, 0.5))):
            spread = (k - 1.5) * d.uniform(0.0, 0.08)
            base = (palm_centre[0] + (forward[0] * 0.3 + across[0] * offset) * scale,
                    palm_centre[1] + (forward[1] * 0.3 + across[1] * offset) * scale)
            direction = (math.cos(angle + spread), math.sin(angle + spread))
            tip = (base[0] + direction[0] * length * curl * scale, base[1] + direction[1] * length * curl * scale)
            parts.append(sd_capsule(a, b, base, tip, 0.085 * scale))
        thumb_side = d.choice((-1.0, 1.0))
        thumb_base = (palm_centre[0] + across[0] * 0.3 * thumb_side * scale,
                      palm_centre[1] + across[1] * 0.3 * thumb_side * scale)
        thumb_dir = angle + thumb_side * d.uniform(0.6, 1.1)
        thumb_tip = (thumb_base[0] + math.cos(thumb_dir) * 0.45 * scale,
                     thumb_base[1] + math.sin(thumb_dir) * 0.45 * scale)
        parts.append(sd_capsule(a, b, thumb_base, thumb_tip, 0.1 * scale))
        wrist = (palm_centre[0] - forward[0] * 4, palm_centre[1] - forward[1] * 4)
        parts.append(sd_capsule(a, b, palm_centre, wrist, 0.34 * scale))
        shape = torch.stack(parts).amin(0)
        skin = d.jitter(d.choice(SKIN_TONES), 0.05)
        # darker where the surface turns away (near any outline, including between fingers)
        shade = 0.7 + 0.3 * smoothstep(0.0, 0.12, -shape) + 0.05 * (d.noise(self.size, 6)[0] - 0.5)
        alpha = f.coverage(shape)
        return over(image, skin[:, None, None] * shade[None], alpha), alpha

    def _microphone(self, image: Tensor):
        d, f = self.draws, self.frame
        a, b = f.a, f.b
        mouth = f.points[48:68].mean(0)
        radius = d.uniform(0.35, 0.55)
        centre = (float(mouth[0]) + d.uniform(-0.3, 0.3), float(mouth[1]) + d.uniform(0.2, 0.7))
        angle = math.pi / 2 + d.uniform(-0.5, 0.5)  # the handle goes down, off the image
        end = (centre[0] + 5 * math.cos(angle), centre[1] + 5 * math.sin(angle))
        handle = sd_capsule(a, b, centre, end, radius * d.uniform(0.3, 0.45))
        handle_colour = d.colour(saturation=(0.0, 0.2), value=(0.03, 0.25))
        across = ((a - centre[0]) * -math.sin(angle) + (b - centre[1]) * math.cos(angle)) / radius
        handle_shade = 0.6 + 0.8 * torch.exp(-((across + 0.15) / 0.12) ** 2)
        handle_alpha = f.coverage(handle)
        image = over(image, handle_colour[:, None, None] * handle_shade[None], handle_alpha)
        head = sd_ellipse(a, b, centre, (radius, radius))
        x, y = (a - centre[0]) / radius, (b - centre[1]) / radius
        nz = (1 - x**2 - y**2).clamp_min(0).sqrt()
        light = (-0.45 * x - 0.5 * y + 0.74 * nz).clamp_min(0)
        if d.chance(0.5):  # metal grille
            colour = d.jitter((0.7, 0.7, 0.72), 0.1)
            period = d.uniform(10, 18) / radius
            grille = 0.75 + 0.25 * (torch.sin(a * period) * torch.sin(b * period)).abs()
            shade = (0.3 + 0.8 * light) * grille + 0.6 * light**20
        else:  # foam windscreen
            colour = d.colour(saturation=(0.3, 0.9), value=(0.2, 0.8))
            shade = (0.4 + 0.7 * light) * (0.85 + 0.3 * (d.noise(self.size, self.size / 4)[0] - 0.5))
        head_alpha = f.coverage(head)
        image = over(image, colour[:, None, None] * shade[None], head_alpha)
        return image, torch.maximum(handle_alpha, head_alpha)
