"""The built-in open morphable model's neutral head: its mesh, features, regions and landmarks.

The geometry half of :mod:`sgpn.face3d.builtin_model` (which builds the bases on it): a height
field over a regular grid of rows and columns, features as smooth bumps and grooves, each
vertex's region, and the 68 landmark vertices in the iBUG 300-W order.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline, PchipInterpolator

#: Region of every vertex, an index into this tuple.
REGION_NAMES = (
    "skin", "forehead", "brow", "eyelid", "eye", "nose", "cheek", "lips", "mouth_interior",
    "chin", "jaw",
)

# -- grid ------------------------------------------------------------------------------------
ROW_SPACING = 0.0115  # rows away from the eyes and mouth
COLUMN_SPACING = 0.0118  # arc length between columns
Y_BOTTOM, Y_TOP = -0.98, 0.92  # rows span the outline below
MAX_ARC = 1.25  # half the widest row, in arc length

# -- features (D3DFR frame; eye and mouth corners sit on the 5-point template) ---------------
EYE_X, EYE_Y = 0.31, 0.29  # midpoint of each eye's two corners
EYE_HALF_WIDTH = 0.15
EYE_TILT = 0.007  # outer corners a little higher than inner ones
UPPER_LID, LOWER_LID = 0.058, 0.036  # lid margins above / below the corner line
IRIS_Y, IRIS_RADIUS, PUPIL_RADIUS = 0.302, 0.05, 0.02
MOUTH_X, MOUTH_Y = 0.25, -0.395  # corners at x = +-0.25; the line dips to -0.395 in the middle
MOUTH_CORNER_RISE = 0.017
MOUTH_BAND = 0.013  # half height of the dark band between the lips
NOSE_TIP_Y = -0.042
BROW_INNER_X, BROW_LENGTH = 0.12, 0.44




# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


def gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def ramp(v, lo, hi):
    """Smoothstep from 0 at ``lo`` to 1 at ``hi`` (either order)."""
    t = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)




def _profile(points, smooth=True):
    """A curve through ``(y, value)`` control points, held constant past the ends.

    ``smooth`` curves are C2 cubic splines, so that shading shows no creases across rows;
    the others (outlines) are monotone-preserving PCHIP curves.
    """
    ys, values = np.asarray(points, dtype=np.float64).T
    curve = CubicSpline(ys, values, bc_type="clamped") if smooth else PchipInterpolator(ys, values)
    return lambda y: curve(np.clip(y, ys[0], ys[-1]))


# Head cross-section at height y: half width a(y), depth radius b(y), midline depth z0(y).
_HALF_WIDTH = _profile([(-1.05, 0.38), (-0.9, 0.48), (-0.7, 0.62), (-0.45, 0.74), (-0.15, 0.83),
                        (0.2, 0.86), (0.5, 0.84), (0.75, 0.78), (1.05, 0.66)])
_DEPTH_RADIUS = _profile([(-1.05, 0.55), (-0.7, 0.68), (-0.3, 0.80), (0.2, 0.88), (0.6, 0.92),
                          (1.05, 0.90)])
_MIDLINE = _profile([(-1.05, -0.10), (-0.95, 0.06), (-0.82, 0.21), (-0.7, 0.265), (-0.55, 0.28),
                     (-0.4, 0.295), (-0.2, 0.30), (0.0, 0.29), (0.2, 0.285), (0.4, 0.30),
                     (0.55, 0.30), (0.75, 0.24), (0.95, 0.12), (1.05, 0.05)])
# The face outline seen from the front: half width of the mask at height y.
_OUTLINE = _profile([(-0.975, 0.0), (-0.96, 0.16), (-0.92, 0.28), (-0.84, 0.42), (-0.72, 0.56),
                     (-0.55, 0.69), (-0.4, 0.76), (-0.2, 0.815), (0.0, 0.835), (0.2, 0.84),
                     (0.4, 0.825), (0.6, 0.785), (0.72, 0.72), (0.79, 0.64), (0.835, 0.55),
                     (0.87, 0.42), (0.89, 0.26), (0.90, 0.0)], smooth=False)
# Nose bridge height above the face and its width, along y.
_NOSE_HEIGHT = _profile([(-0.19, 0.0), (-0.15, 0.08), (-0.11, 0.18), (-0.07, 0.25),
                         (-0.04, 0.267), (0.05, 0.215), (0.2, 0.13), (0.33, 0.06), (0.45, 0.0)])
_NOSE_WIDTH = _profile([(-0.19, 0.085), (-0.05, 0.07), (0.1, 0.055), (0.3, 0.045), (0.45, 0.05)])


def _head_depth(x, y):
    """Depth of the head-shaped cross-section (an ellipse per row) before any feature."""
    a, b = _HALF_WIDTH(y), _DEPTH_RADIUS(y)
    r = np.clip(x / a, -0.999, 0.999)
    return _MIDLINE(y) - b * (1.0 - np.sqrt(1.0 - r * r))


# ----------------------------------------------------------------------------------------------
# the grid
# ----------------------------------------------------------------------------------------------


def _row_heights() -> np.ndarray:
    """Row y values, bottom to top, about twice as dense across the eyes and the mouth line."""
    ys = [Y_BOTTOM]
    while ys[-1] < Y_TOP:
        y = ys[-1]
        density = (1.0 - 0.45 * np.exp(-0.5 * ((y - 0.30) / 0.07) ** 2)
                   - 0.6 * np.exp(-0.5 * ((y - MOUTH_Y) / 0.035) ** 2))
        ys.append(y + ROW_SPACING * density)
    return np.asarray(ys)


def grid():
    """Vertex positions (x, y) of the full grid, which grid points are kept, and the faces.

    Columns are equally spaced in arc length along each row's cross-section, so the sides of
    the face, which turn away from the camera, are as finely meshed as the front.
    """
    rows = _row_heights()
    half = round(MAX_ARC / COLUMN_SPACING)
    arcs = np.arange(-half, half + 1) * COLUMN_SPACING
    xs = np.empty((len(rows), len(arcs)))
    half_arc = np.zeros(len(rows))
    for r, y in enumerate(rows):
        fine = np.linspace(0.0, 0.999 * _HALF_WIDTH(y), 2000)
        depth = _head_depth(fine, np.full_like(fine, y))
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(fine), np.diff(depth)))])
        xs[r] = np.sign(arcs) * np.interp(np.abs(arcs), arc, fine)
        half_arc[r] = np.interp(_OUTLINE(y), fine, arc, right=arc[-1] - COLUMN_SPACING)
    ys = np.broadcast_to(rows[:, None], xs.shape)
    keep = np.abs(arcs)[None, :] <= half_arc[:, None]

    # Two triangles per grid cell whose corners are all kept; the diagonals mirror at the
    # midline so that the mesh (and its shading) is left-right symmetric.
    n_rows, n_cols = xs.shape
    index = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    a, b = index[:-1, :-1], index[:-1, 1:]  # lower row, left / right
    c, d = index[1:, :-1], index[1:, 1:]  # upper row
    right = (arcs[:-1] >= 0)[None, :].repeat(n_rows - 1, 0)
    tri1 = np.where(right[..., None], np.stack([a, b, d], -1), np.stack([a, b, c], -1))
    tri2 = np.where(right[..., None], np.stack([a, d, c], -1), np.stack([b, d, c], -1))
    faces = np.concatenate([tri1.reshape(-1, 3), tri2.reshape(-1, 3)])
    flat_keep = keep.reshape(-1)
    faces = faces[flat_keep[faces].all(1)]
    used = np.zeros(n_rows * n_cols, dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return xs.reshape(-1), ys.reshape(-1), used, remap[faces], (n_rows, n_cols)


# ----------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------


def _eye_frame(x, y):
    """Eye coordinates: ``u`` runs -1 (inner corner) .. 1 (outer), and the lid margins.

    Returns ``u``, the corner line ``yc``, the upper and lower margins ``yu``, ``yl`` (at the
    clipped ``u``) and an approximate signed distance to the opening (negative inside).
    """
    u = (np.abs(x) - EYE_X) / EYE_HALF_WIDTH
    uc = np.clip(u, -1.0, 1.0)
    yc = EYE_Y + EYE_TILT * uc
    span = 1.0 - uc * uc
    yu = yc + UPPER_LID * span**0.75 * (1.0 - 0.15 * uc)
    yl = yc - LOWER_LID * span**0.8 * (1.0 + 0.2 * uc)
    outside_x = EYE_HALF_WIDTH * np.maximum(np.abs(u) - 1.0, 0.0)
    vertical = np.maximum(yl - y, y - yu)
    distance = np.where(np.abs(u) < 1.0, vertical, np.hypot(outside_x, y - yc))
    return u, yc, yu, yl, distance


def _mouth_line(x):
    """y of the line where the lips meet; it rises a little towards the corners."""
    return MOUTH_Y + MOUTH_CORNER_RISE * (x / MOUTH_X) ** 2


def _lip_outline(x):
    """Upper and lower vermilion borders (y) and the lips' horizontal taper (0 past corners)."""
    t = np.clip(x / MOUTH_X, -1.0, 1.0)
    across = 1.0 - t * t
    line = _mouth_line(x)
    cupid = (0.012 * np.exp(-0.5 * (x / 0.022) ** 2)
             - 0.006 * np.exp(-0.5 * ((np.abs(x) - 0.06) / 0.03) ** 2))
    upper = line + (0.07 * across**0.7 - cupid) * (np.abs(x) < MOUTH_X)
    lower = line - 0.095 * across**0.6
    return upper, lower, across


def nose_height(x, y):
    """The nose above the face: bridge, rounded tip and the two alae."""
    bridge = np.clip(_NOSE_HEIGHT(y), 0.0, None) * np.exp(-0.5 * (x / _NOSE_WIDTH(y)) ** 2)
    tip = 0.04 * gauss(x, y, 0.0, NOSE_TIP_Y - 0.005, 0.06, 0.045)
    alae = 0.09 * gauss(np.abs(x), y, 0.095, -0.115, 0.04, 0.035)
    return np.maximum(bridge + tip, alae + 0.5 * bridge)


def neutral_depth(x, y):
    """z of the mean face at (x, y): the head's cross-section plus every feature."""
    ax = np.abs(x)
    z = _head_depth(x, y)
    # forehead, brows, temples
    z += 0.045 * gauss(ax, y, 0.29, 0.475, 0.16, 0.05)
    z += 0.015 * gauss(x, y, 0.0, 0.45, 0.08, 0.06)
    z -= 0.02 * gauss(ax, y, 0.70, 0.45, 0.10, 0.15)
    # eyes: socket, eyeball, lids with a crease, cornea
    u, yc, yu, yl, dist = _eye_frame(x, y)
    z -= 0.10 * gauss(ax, y, 0.30, 0.31, 0.13, 0.10)
    rho2 = ((ax - EYE_X) / 0.2) ** 2 + ((y - 0.30) / 0.13) ** 2
    z += 0.075 * np.clip(1.0 - rho2, 0.0, None) ** 1.5
    lid = np.where(dist < 0, np.exp(-((dist / 0.003) ** 2)), np.exp(-((dist / 0.025) ** 2)))
    z += 0.010 * lid
    z -= 0.006 * np.exp(-0.5 * ((y - yu - 0.035) / 0.008) ** 2) * ramp(1.0 - np.abs(u), 0.0, 0.4)
    r2 = ((ax - EYE_X) ** 2 + (y - IRIS_Y) ** 2) / (IRIS_RADIUS + 0.005) ** 2
    z += 0.008 * np.clip(1.0 - r2, 0.0, None) ** 2
    # nose, nostrils
    z += nose_height(x, y)
    z -= 0.02 * gauss(ax, y, 0.045, -0.145, 0.022, 0.012)
    # mouth: dental arch, philtrum, lips, the line between them, corners
    z += 0.07 * gauss(x, y, 0.0, -0.38, 0.27, 0.22)
    z -= 0.006 * gauss(x, y, 0.0, -0.25, 0.018, 0.05)
    upper, lower, across = _lip_outline(x)
    line = _mouth_line(x)
    q_up = np.clip((y - line) / np.maximum(upper - line, 1e-3), 0.0, 1.0)
    q_low = np.clip((line - y) / np.maximum(line - lower, 1e-3), 0.0, 1.0)
    taper = np.sqrt(across)
    z += 0.035 * (1.0 - (2 * q_up - 1) ** 2) ** 0.6 * taper * (y >= line)
    z += 0.045 * (1.0 - (2 * q_low - 1) ** 2) ** 0.6 * taper * (y < line)
    z += 0.02 * gauss(x, y, 0.0, MOUTH_Y, 0.16, 0.07)
    z -= 0.016 * np.exp(-(((y - line) / 0.011) ** 2)) * ramp(ax, MOUTH_X + 0.03, MOUTH_X - 0.02)
    z -= 0.01 * gauss(ax, y, MOUTH_X, MOUTH_Y + MOUTH_CORNER_RISE, 0.02, 0.02)
    # chin, cheeks, nasolabial folds
    z -= 0.02 * gauss(x, y, 0.0, -0.555, 0.12, 0.03)
    z += 0.08 * gauss(x, y, 0.0, -0.72, 0.14, 0.09)
    z += 0.05 * gauss(ax, y, 0.42, 0.10, 0.14, 0.09)
    z += 0.02 * gauss(ax, y, 0.35, -0.15, 0.14, 0.12)
    fold = _segment_distance(ax, y, (0.13, -0.12), (0.30, -0.43))
    z -= 0.008 * np.exp(-0.5 * (fold / 0.015) ** 2)
    return z


def _segment_distance(x, y, p, q):
    """Distance from points (x, y) to the segment from p to q."""
    px, py = p
    dx, dy = q[0] - px, q[1] - py
    t = np.clip(((x - px) * dx + (y - py) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - px - t * dx, y - py - t * dy)


# ----------------------------------------------------------------------------------------------
# regions and colours
# ----------------------------------------------------------------------------------------------


def _brow_line(t):
    """Height of a brow's centre line, ``t`` running 0 (inner end) .. 1 (tail)."""
    return 0.462 + 0.06 * np.sin(np.pi * t**0.8)


class FaceParts:
    """Soft (0..1) and hard masks of the face parts at the neutral vertex positions."""

    def __init__(self, x, y):
        ax = np.abs(x)
        self.u, self.yc, self.yu, self.yl, self.eye_distance = _eye_frame(x, y)
        self.eye = self.eye_distance < 0
        self.iris_r = np.hypot(ax - EYE_X, y - IRIS_Y)
        self.upper_lip, self.lower_lip, across = _lip_outline(x)
        self.line = _mouth_line(x)
        self.mouth_interior = (np.abs(y - self.line) < MOUTH_BAND) & (ax < MOUTH_X - 0.015)
        between = (y < self.upper_lip) & (y > self.lower_lip)
        self.lips = (ax < MOUTH_X) & between & ~self.mouth_interior
        self.lips_soft = (ramp(self.upper_lip - y, -0.004, 0.004)
                          * ramp(y - self.lower_lip, -0.004, 0.006)
                          * ramp(ax, MOUTH_X + 0.005, MOUTH_X - 0.02))
        # brows: a curved stroke over each eye, thick inside, thin at the tail
        t = np.clip((ax - BROW_INNER_X) / BROW_LENGTH, 0.0, 1.0)
        centre = _brow_line(t)
        half = 0.037 * (1.0 - 0.5 * t)
        self.brow = (ramp(half - np.abs(y - centre), -0.004, 0.008)
                     * ramp(ax, BROW_INNER_X, BROW_INNER_X + 0.044)
                     * ramp(ax, BROW_INNER_X + BROW_LENGTH, BROW_INNER_X + 0.88 * BROW_LENGTH))
        self.nose = nose_height(x, y) > 0.02
        self.nostril = gauss(ax, y, 0.048, -0.15, 0.024, 0.009)
        self.cheek = gauss(ax, y, 0.38, -0.08, 0.13, 0.13)


def vertex_regions(x, y, parts: FaceParts) -> np.ndarray:
    """Region index of every vertex; later rules win (features over broad areas)."""
    ax = np.abs(x)
    name = np.full(x.shape, "skin", dtype=object)
    name[y > 0.56] = "forehead"
    name[((y < -0.3) & (ax > 0.3)) | (y < -0.8)] = "jaw"
    name[(y < -0.5) & ((ax / 0.3) ** 2 + ((y + 0.72) / 0.26) ** 2 < 1.0)] = "chin"
    name[(parts.cheek > 0.25) & (y < 0.2)] = "cheek"
    name[parts.nose] = "nose"
    name[(parts.eye_distance < 0.04) & (np.abs(parts.u) < 1.25)] = "eyelid"
    name[parts.brow > 0.5] = "brow"
    name[parts.eye] = "eye"
    name[parts.lips] = "lips"
    name[parts.mouth_interior] = "mouth_interior"
    return np.array([REGION_NAMES.index(n) for n in name])


def moving_parts(x, y):
    """Where expressions may act: mouth and jaw, brows, eyelids."""
    ax = np.abs(x)
    mouth_jaw = ramp(y, -0.05, -0.2) * ramp(ax, 0.75, 0.55)
    brows = gauss(ax, y, 0.3, 0.47, 0.22, 0.08)
    lids = gauss(ax, y, EYE_X, EYE_Y + 0.02, 0.13, 0.07)
    return np.clip(mouth_jaw + brows + lids, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# landmarks and mesh bookkeeping
# ----------------------------------------------------------------------------------------------


def _landmark_targets(outline_xy):
    """(x, y) targets of iBUG landmarks 0-35: jaw, brows, nose."""
    pts = [tuple(p) for p in outline_xy]  # 0-16 jaw
    t = np.array([0.86, 0.66, 0.46, 0.27, 0.1])  # outer end first, as iBUG's 17-21
    brow = list(zip(BROW_INNER_X + BROW_LENGTH * t, _brow_line(t)))
    pts += [(-bx, by) for bx, by in brow] + [(bx, by) for bx, by in brow[::-1]]  # 17-26
    pts += [(0.0, 0.30), (0.0, 0.20), (0.0, 0.08), (0.0, NOSE_TIP_Y)]  # 27-30
    pts += [(-0.09, -0.135), (-0.045, -0.152), (0.0, -0.165), (0.045, -0.152), (0.09, -0.135)]
    return pts


def _eye_landmarks(side: float):
    """Targets of one eye's six iBUG landmarks, in iBUG order, and whether each lies on the
    upper lid, the lower lid or at a corner (``None``)."""
    # iBUG runs clockwise in the image from the eye's left corner: for the image-left eye
    # (side -1) that is the outer corner (u = 1), for the image-right eye the inner one.
    us = (1.0, 0.4, -0.4, -1.0, -0.4, 0.4) if side < 0 else (-1.0, -0.4, 0.4, 1.0, 0.4, -0.4)
    lids = (None, "upper", "upper", None, "lower", "lower")
    xs = side * (EYE_X + EYE_HALF_WIDTH * 0.97 * np.asarray(us))
    _, yc, yu, yl, _ = _eye_frame(xs, np.zeros_like(xs))
    ys = np.select([np.equal(lids, "upper"), np.equal(lids, "lower")], [yu, yl], yc)
    return list(zip(xs, ys)), lids


def _mouth_landmarks():
    """Targets of iBUG landmarks 48-67: lip outline from the left corner, then the inner lips."""
    def outline(px):
        upper, lower, _ = _lip_outline(np.array([px]))
        return upper[0], lower[0]

    corner_y = _mouth_line(MOUTH_X)
    pts = [(-MOUTH_X, corner_y)]  # 48
    for px in (-0.16, -0.07, 0.0, 0.07, 0.16):  # 49-53 upper outer
        pts.append((px, outline(px)[0] - 0.004))
    pts.append((MOUTH_X, corner_y))  # 54
    for px in (0.16, 0.07, 0.0, -0.07, -0.16):  # 55-59 lower outer
        pts.append((px, outline(px)[1] + 0.004))
    inner = MOUTH_X - 0.035
    pts.append((-inner, _mouth_line(inner)))  # 60
    for px in (-0.08, 0.0, 0.08):  # 61-63 inner upper lip edge
        pts.append((px, _mouth_line(px) + MOUTH_BAND + 0.003))
    pts.append((inner, _mouth_line(inner)))  # 64
    for px in (0.08, 0.0, -0.08):  # 65-67 inner lower lip edge
        pts.append((px, _mouth_line(px) - MOUTH_BAND - 0.003))
    return pts


def _jaw_outline(x, y, faces):
    """17 points spaced evenly along the lower face outline, from the left temple round the
    chin to the right one, stepped a little inside so that they sit on the visible face."""
    n = len(x)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    keys, counts = np.unique(edges[:, 0] * n + edges[:, 1], return_counts=True)
    rim = np.unique(np.concatenate([keys[counts == 1] // n, keys[counts == 1] % n]))
    rim = rim[y[rim] < 0.2]
    rim = rim[np.argsort(np.arctan2(y[rim] - 0.2, x[rim]))]  # -pi (left) .. 0 (right)
    px, py = x[rim], y[rim]
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(px), np.diff(py)))])
    targets = np.linspace(0.0, arc[-1], 17)
    outline = np.stack([np.interp(targets, arc, px), np.interp(targets, arc, py)], 1)
    inward = np.array([0.0, 0.1]) - outline
    return outline + 0.03 * inward / np.linalg.norm(inward, axis=1, keepdims=True)


def _nearest(x, y, targets, allowed=None):
    """Index of the vertex nearest each (x, y) target, among the ``allowed`` ones."""
    pool = np.arange(len(x)) if allowed is None else np.flatnonzero(allowed)
    idx = []
    for tx, ty in targets:
        d = (x[pool] - tx) ** 2 + (y[pool] - ty) ** 2
        idx.append(pool[d.argmin()])
    return idx


def landmark_vertices(x, y, faces, parts: FaceParts) -> np.ndarray:
    """The 68 iBUG landmark vertices, placed on the features of the neutral face."""
    outline = _jaw_outline(x, y, faces)
    idx = _nearest(x, y, _landmark_targets(outline))
    # eye lids: pick on the lid side of the margin, so that closing the eye moves them
    lid_side = {None: None, "upper": ~parts.eye & (y > parts.yc),
                "lower": ~parts.eye & (y <= parts.yc)}
    for side in (-1.0, 1.0):
        targets, lids = _eye_landmarks(side)
        for target, lid in zip(targets, lids):
            idx += _nearest(x, y, [target], lid_side[lid])
    mouth = _mouth_landmarks()
    upper_edge = (~parts.mouth_interior) & (y > parts.line)
    lower_edge = (~parts.mouth_interior) & (y < parts.line)
    outer = ([None] + [parts.lips] * 5) * 2  # corners, then on the lips
    inner = [None] + [upper_edge] * 3 + [None] + [lower_edge] * 3  # corners, then lip edges
    allowed = outer + inner
    for p, a in zip(mouth, allowed):
        idx += _nearest(x, y, [p], a)
    return np.asarray(idx, dtype=np.int64)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals: area-weighted face normals summed around each vertex."""
    v1, v2, v3 = (vertices[faces[:, k]] for k in range(3))
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], np.cross(v2 - v1, v3 - v1))
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def point_buf(faces: np.ndarray, n: int) -> np.ndarray:
    """Up to 8 faces around each vertex, padded with the index of the padding face ``F``."""
    f = len(faces)
    vertex = faces.reshape(-1)
    face = np.repeat(np.arange(f), 3)
    order = np.argsort(vertex, kind="stable")
    vertex, face = vertex[order], face[order]
    first = np.searchsorted(vertex, np.arange(n))
    slot = np.arange(len(vertex)) - first[vertex]
    if slot.max() >= 8:
        raise RuntimeError("a vertex has more than 8 faces")
    buf = np.full((n, 8), f, dtype=np.int64)
    buf[vertex, slot] = face
    return buf
