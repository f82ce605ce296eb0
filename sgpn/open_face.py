"""The kit's built-in open morphable face model, made entirely by code.

The Basel Face Model cannot ship with an open kit, so the default face model is built here from
a few dozen hand-placed shapes: no data files, nothing downloaded, the same result on every
machine. It has the BFM's layout (80 identity, 64 expression, 80 texture components) and lives
in D3DFR's frame and units (x right, y up, z towards the camera; the face spans about -0.9..0.9),
with its features on D3DFR's 5-point 3D template (eyes, nose tip, mouth corners), so the camera,
renderer, landmarks and crops of the official pipeline all fit it unchanged.

Geometry. The face is one frontal mask, like ``BFM_model_front``: a height field over a
regular grid of rows (y) and columns (arc length around a head-shaped cross-section), so the
mesh is clean everywhere and the sides wrap back towards the ears. Rows are denser across the
eyes and the mouth. Features are smooth bumps and grooves added to the depth: brow ridges, eye
sockets with eyeballs, lids and corneas, nose bridge, tip and alae, lips around a mouth line,
chin, cheekbones. Between the lips lies a thin band of dark "inside the mouth" vertices: opening
the jaw stretches it into a dark opening. An eye closes by sliding its upper lid down over the
eyeball (the eyeball vertices fold into the lower lid), so no vertex ever needs to change colour.

Bases. The leading components of each basis are designed deformations or colour changes with a
name (``component_names``); a positive coefficient makes the named property larger (wider face,
bigger smile, lighter skin, bluer iris...). The remaining components are smooth low-frequency
fields (cosine products over the face; for expressions, only over the moving parts: mouth, jaw,
brows and eyelids). Each basis is made orthonormal by Gram-Schmidt in that order (so a named
component is what is left of its design after the earlier ones are taken out) and scaled so
that N(0, 1) coefficients give faces at the model's scale (D3DFR's convention: columns carry
the standard deviation). Columns are ordered by decreasing norm, named ones first: the unnamed
ones are kept smaller than the smallest named one, so random faces vary mostly in named ways.

Limits. It is a caricature of a face, not a statistical model of real ones: shapes are smooth,
the skin has no pores or wrinkles, there is no hair, teeth or back of the head. A linear model
cannot close a gap past zero: "mouth open" below about -1.3 standard deviations presses the
lower lip through the upper one (the thin mouth band folds, as lips pressing together would),
which random expression draws (0.7 standard deviations) reach a few times in a hundred.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.interpolate import CubicSpline, PchipInterpolator
from scipy.linalg import solve_triangular
from scipy.ndimage import gaussian_filter

from sgpn.face_model import MorphableArrays

#: Region of every vertex, an index into this tuple.
REGION_NAMES = (
    "skin", "forehead", "brow", "eyelid", "eye", "nose", "cheek", "lips", "mouth_interior",
    "chin", "jaw",
)
NUM_ID, NUM_EXP, NUM_TEX = 80, 64, 80

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

# -- colours (albedo 0..1) ---------------------------------------------------------------------
SKIN = np.array([0.80, 0.60, 0.50])
LIPS = np.array([0.74, 0.43, 0.42])
MOUTH_INSIDE = np.array([0.20, 0.07, 0.07])
BROW_HAIR = np.array([0.26, 0.19, 0.15])
SCLERA = np.array([0.92, 0.88, 0.85])
IRIS = np.array([0.38, 0.26, 0.17])
PUPIL = np.array([0.03, 0.03, 0.03])
LASHES = np.array([0.14, 0.10, 0.09])
NOSTRIL = np.array([0.30, 0.15, 0.13])


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _ramp(v, lo, hi):
    """Smoothstep from 0 at ``lo`` to 1 at ``hi`` (either order)."""
    t = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _odd(x, width=0.05):
    """A smooth stand-in for sign(x): fields that push sideways must vanish at the midline."""
    return np.tanh(x / width)


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


def _grid():
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


def _nose_height(x, y):
    """The nose above the face: bridge, rounded tip and the two alae."""
    bridge = np.clip(_NOSE_HEIGHT(y), 0.0, None) * np.exp(-0.5 * (x / _NOSE_WIDTH(y)) ** 2)
    tip = 0.04 * _gauss(x, y, 0.0, NOSE_TIP_Y - 0.005, 0.06, 0.045)
    alae = 0.09 * _gauss(np.abs(x), y, 0.095, -0.115, 0.04, 0.035)
    return np.maximum(bridge + tip, alae + 0.5 * bridge)


def _neutral_depth(x, y):
    """z of the mean face at (x, y): the head's cross-section plus every feature."""
    ax = np.abs(x)
    z = _head_depth(x, y)
    # forehead, brows, temples
    z += 0.045 * _gauss(ax, y, 0.29, 0.475, 0.16, 0.05)
    z += 0.015 * _gauss(x, y, 0.0, 0.45, 0.08, 0.06)
    z -= 0.02 * _gauss(ax, y, 0.70, 0.45, 0.10, 0.15)
    # eyes: socket, eyeball, lids with a crease, cornea
    u, yc, yu, yl, dist = _eye_frame(x, y)
    z -= 0.10 * _gauss(ax, y, 0.30, 0.31, 0.13, 0.10)
    rho2 = ((ax - EYE_X) / 0.2) ** 2 + ((y - 0.30) / 0.13) ** 2
    z += 0.075 * np.clip(1.0 - rho2, 0.0, None) ** 1.5
    lid = np.where(dist < 0, np.exp(-((dist / 0.003) ** 2)), np.exp(-((dist / 0.025) ** 2)))
    z += 0.010 * lid
    z -= 0.006 * np.exp(-0.5 * ((y - yu - 0.035) / 0.008) ** 2) * _ramp(1.0 - np.abs(u), 0.0, 0.4)
    r2 = ((ax - EYE_X) ** 2 + (y - IRIS_Y) ** 2) / (IRIS_RADIUS + 0.005) ** 2
    z += 0.008 * np.clip(1.0 - r2, 0.0, None) ** 2
    # nose, nostrils
    z += _nose_height(x, y)
    z -= 0.02 * _gauss(ax, y, 0.045, -0.145, 0.022, 0.012)
    # mouth: dental arch, philtrum, lips, the line between them, corners
    z += 0.07 * _gauss(x, y, 0.0, -0.38, 0.27, 0.22)
    z -= 0.006 * _gauss(x, y, 0.0, -0.25, 0.018, 0.05)
    upper, lower, across = _lip_outline(x)
    line = _mouth_line(x)
    q_up = np.clip((y - line) / np.maximum(upper - line, 1e-3), 0.0, 1.0)
    q_low = np.clip((line - y) / np.maximum(line - lower, 1e-3), 0.0, 1.0)
    taper = np.sqrt(across)
    z += 0.035 * (1.0 - (2 * q_up - 1) ** 2) ** 0.6 * taper * (y >= line)
    z += 0.045 * (1.0 - (2 * q_low - 1) ** 2) ** 0.6 * taper * (y < line)
    z += 0.02 * _gauss(x, y, 0.0, MOUTH_Y, 0.16, 0.07)
    z -= 0.016 * np.exp(-(((y - line) / 0.011) ** 2)) * _ramp(ax, MOUTH_X + 0.03, MOUTH_X - 0.02)
    z -= 0.01 * _gauss(ax, y, MOUTH_X, MOUTH_Y + MOUTH_CORNER_RISE, 0.02, 0.02)
    # chin, cheeks, nasolabial folds
    z -= 0.02 * _gauss(x, y, 0.0, -0.555, 0.12, 0.03)
    z += 0.08 * _gauss(x, y, 0.0, -0.72, 0.14, 0.09)
    z += 0.05 * _gauss(ax, y, 0.42, 0.10, 0.14, 0.09)
    z += 0.02 * _gauss(ax, y, 0.35, -0.15, 0.14, 0.12)
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


class _Parts:
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
        self.lips_soft = (_ramp(self.upper_lip - y, -0.004, 0.004)
                          * _ramp(y - self.lower_lip, -0.004, 0.006)
                          * _ramp(ax, MOUTH_X + 0.005, MOUTH_X - 0.02))
        # brows: a curved stroke over each eye, thick inside, thin at the tail
        t = np.clip((ax - BROW_INNER_X) / BROW_LENGTH, 0.0, 1.0)
        centre = _brow_line(t)
        half = 0.037 * (1.0 - 0.5 * t)
        self.brow = (_ramp(half - np.abs(y - centre), -0.004, 0.008)
                     * _ramp(ax, BROW_INNER_X, BROW_INNER_X + 0.044)
                     * _ramp(ax, BROW_INNER_X + BROW_LENGTH, BROW_INNER_X + 0.88 * BROW_LENGTH))
        self.nose = _nose_height(x, y) > 0.02
        self.nostril = _gauss(ax, y, 0.048, -0.15, 0.024, 0.009)
        self.cheek = _gauss(ax, y, 0.38, -0.08, 0.13, 0.13)


def _regions(x, y, parts: _Parts) -> np.ndarray:
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


def _mean_colour(x, y, cavity, facing, parts: _Parts) -> np.ndarray:
    """Albedo of the mean face: skin, lips, brows, eyes, nostrils.

    Like the BFM's mean texture (captured under soft light), it carries a little baked shading:
    creases (``cavity``, depth below a blurred surface) and surfaces turned away from the camera
    (``facing``, the z of the normal) are darker, so the face reads in 3D even unlit.
    """
    ax = np.abs(x)
    rng = np.random.default_rng(7)
    colour = np.tile(SKIN, (len(x), 1))
    colour += np.outer(parts.cheek, [0.04, -0.015, -0.01])
    colour += np.outer(_gauss(x, y, 0.0, -0.05, 0.05, 0.06), [0.03, -0.02, -0.015])
    colour += np.outer(_gauss(ax, y, 0.31, 0.24, 0.12, 0.05), [-0.04, -0.05, -0.03])
    colour += np.outer(_ramp(y, 0.5, 0.9), [0.01, 0.01, 0.0])
    shade = (1.0 - np.clip(6.0 * cavity, 0.0, 0.45)) * (0.78 + 0.22 * np.clip(facing, 0.0, 1.0))
    colour *= shade[:, None]
    crease = (np.exp(-0.5 * ((y - parts.yu - 0.035) / 0.01) ** 2)
              * _ramp(1.0 - np.abs(parts.u), 0.0, 0.5))
    colour *= (1.0 - 0.12 * crease * (parts.eye_distance > 0))[:, None]
    # lips, with a darker inner part, then the dark mouth band
    lip_colour = LIPS - np.outer(np.exp(-(((y - parts.line) / 0.02) ** 2)), [0.1, 0.08, 0.07])
    colour += parts.lips_soft[:, None] * (lip_colour - colour)
    colour[parts.mouth_interior] = MOUTH_INSIDE
    # nostrils
    colour += 0.8 * parts.nostril[:, None] * (NOSTRIL - colour)
    # brows: hair strokes as slanted stripes plus a little per-vertex noise
    strokes = 0.85 + 0.15 * np.sin(180.0 * (ax + 0.5 * y)) + 0.1 * rng.standard_normal(len(x))
    density = np.clip(parts.brow * np.clip(strokes, 0.0, 1.0), 0.0, 1.0)[:, None]
    colour += 0.9 * density * (BROW_HAIR - colour)
    # eyes: lash lines on the lids, then sclera, iris (with a dark rim), pupil inside the opening
    above = (parts.eye_distance >= 0) & (y > parts.yc) & (np.abs(parts.u) < 1.05)
    below = (parts.eye_distance >= 0) & (y <= parts.yc) & (np.abs(parts.u) < 1.0)
    lash = np.where(above, np.exp(-((parts.eye_distance / 0.006) ** 2)),
                    0.5 * below * np.exp(-((parts.eye_distance / 0.003) ** 2)))
    colour += lash[:, None] * (LASHES - colour)
    eye = parts.eye
    corner_shade = np.clip(np.abs(parts.u), 0, 1) ** 2
    sclera = SCLERA - np.outer(corner_shade, [0.06, 0.14, 0.14])
    caruncle = _ramp(-parts.u, 0.8, 0.95)
    sclera += np.outer(caruncle, [-0.05, -0.3, -0.3])
    angle = np.arctan2(y - IRIS_Y, ax - EYE_X)
    iris = IRIS * (1.0 + 0.12 * np.sin(17 * angle) * (parts.iris_r / IRIS_RADIUS))[:, None]
    iris = iris - np.outer(_ramp(parts.iris_r, 0.8 * IRIS_RADIUS, IRIS_RADIUS), [0.18, 0.13, 0.09])
    w_iris = _ramp(parts.iris_r, IRIS_RADIUS + 0.004, IRIS_RADIUS - 0.004)
    w_pupil = _ramp(parts.iris_r, PUPIL_RADIUS + 0.003, PUPIL_RADIUS - 0.003)
    eye_colour = sclera + w_iris[:, None] * (iris - sclera)
    eye_colour += w_pupil[:, None] * (PUPIL - eye_colour)
    upper_shadow = _ramp(y, parts.yu - 0.025, parts.yu)[:, None] * 0.35
    eye_colour *= 1.0 - upper_shadow
    colour[eye] = eye_colour[eye]
    return np.clip(colour, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# named components
# ----------------------------------------------------------------------------------------------


def _vec(dx=0.0, dy=0.0, dz=0.0, n=None):
    """An ``(n, 3)`` field of vertex offsets from its x, y and z parts (arrays or scalars)."""
    offsets = np.zeros((n, 3))
    offsets[:, 0], offsets[:, 1], offsets[:, 2] = dx, dy, dz
    return offsets


def _jaw_weight(x, y, parts: _Parts, band_share: float):
    """How much of the lower jaw's motion a vertex follows (0 above the mouth, 1 on the chin).

    ``band_share`` of the motion happens across the dark band between the lips (so opening the
    jaw opens the mouth); the rest spreads smoothly over the lips and cheeks. Past the mouth
    corners the split line climbs towards the jaw hinge in front of the ear.
    """
    ax = np.abs(x)
    past = np.maximum(ax - MOUTH_X + 0.02, 0.0)
    split = parts.line + 1.0 * past**2
    width = MOUTH_BAND * 2 + 1.5 * past
    # linear between the lips, so the dark band stretches evenly; smooth past the corners
    band_t = np.clip((split + width / 2 - y) / width, 0.0, 1.0)
    past_corner = _ramp(ax, MOUTH_X - 0.03, MOUTH_X + 0.05)
    band = (1.0 - past_corner) * band_t + past_corner * _ramp(band_t, 0.0, 1.0)
    broad = _ramp(y, split + 0.15 + 0.3 * past, split - 0.2)
    return band_share * band + (1.0 - band_share) * broad


def _identity_designs(x, y, parts: _Parts):
    """Named identity components: (name, vertex offsets ``(N, 3)`` for one standard deviation)."""
    n, ax = len(x), np.abs(x)
    nose = _nose_height(x, y)
    lip_zone = _gauss(x, y, 0.0, MOUTH_Y - 0.01, 0.15, 0.07)
    cheek = _gauss(ax, y, 0.42, -0.12, 0.15, 0.15)
    return [
        ("face width", _vec(dx=0.045 * x, n=n)),
        ("face length", _vec(dy=0.04 * y, n=n)),
        ("jaw width", _vec(dx=0.06 * x * _ramp(y, -0.1, -0.7), n=n)),
        ("chin length", _vec(dy=-0.03 * _ramp(y, -0.42, -0.85), n=n)),
        ("nose size", _vec(dy=-0.012 * _gauss(x, y, 0.0, -0.08, 0.08, 0.06), dz=0.14 * nose, n=n)),
        ("nose width", _vec(dx=0.2 * x * _gauss(x, y, 0.0, -0.1, 0.12, 0.08), n=n)),
        ("eye spacing", _vec(dx=0.02 * _odd(x) * _gauss(ax, y, 0.31, 0.31, 0.13, 0.11), n=n)),
        ("brow height", _vec(dy=0.02 * _gauss(ax, y, 0.32, 0.49, 0.2, 0.06), n=n)),
        ("lip fullness", _vec(dy=0.25 * (y - parts.line) * lip_zone, dz=0.015 * lip_zone, n=n)),
        ("cheek fullness", _vec(dx=0.015 * _odd(x) * cheek, dz=0.03 * cheek, n=n)),
    ]


def _expression_designs(x, y, z, parts: _Parts):
    """Named expressions: (name, vertex offsets ``(N, 3)`` for one standard deviation)."""
    n = len(x)
    ax = np.abs(x)
    # smile: corners up, out and back; cheeks lift
    corner = _gauss(ax, y, MOUTH_X, MOUTH_Y + MOUTH_CORNER_RISE, 0.09, 0.07)
    lift = _gauss(ax, y, 0.33, -0.12, 0.12, 0.10)
    smile = _vec(dx=0.022 * _odd(x) * corner, dy=0.025 * corner + 0.012 * lift,
                 dz=-0.006 * corner + 0.012 * lift, n=n)
    # mouth open: the jaw turns about a hinge in front of the ears
    hinge_y, hinge_z, angle = 0.1, -0.45, 0.055
    jaw = _jaw_weight(x, y, parts, band_share=0.28)
    mouth_open = _vec(dy=-angle * (z - hinge_z) * jaw, dz=angle * (y - hinge_y) * jaw, n=n)
    # brow raise: brows and lower forehead up, upper lids stretch, eye openings stay
    raise_w = (_ramp(y, 0.355, 0.5) * _ramp(y, 0.95, 0.5) * _ramp(ax, 0.75, 0.5)
               * (0.5 + 0.5 * _ramp(ax, 0.04, 0.2)))
    brow_raise = _vec(dy=0.024 * raise_w, n=n)
    # eye close: the upper lid slides down onto the lower lid's lash line, folding the eyeball
    # (and the lower lid's margin) beneath it; three sigma closes the eye
    inside = np.abs(parts.u) < 1.0
    floor = parts.yl - 0.008 * (1.0 - parts.u**2)
    gap = np.where(inside, parts.yu - floor, 0.0)
    lid_reach = 0.13
    drop = np.where(y <= floor, 0.0,
                    np.where(y <= parts.yu, -(y - floor) / np.maximum(gap, 1e-9),
                             -np.clip(1.0 - (y - parts.yu) / lid_reach, 0.0, 1.0)))
    drop = np.where(inside, 0.95 * gap * drop, 0.0) / 3.0
    eye_close = _vec(dy=drop, n=n)
    # frown: inner brows down and together
    knit = _gauss(ax, y, 0.17, 0.47, 0.09, 0.06)
    frown = _vec(dx=-0.015 * _odd(x, 0.04) * knit, dy=-0.02 * knit, dz=0.006 * knit, n=n)
    # pucker: lips forward and together
    lips = _gauss(x, y, 0.0, MOUTH_Y, 0.17, 0.10)
    pucker = _vec(dx=-0.25 * x * lips, dz=0.035 * lips, n=n)
    # jaw sideways: chin and lower lip shift; the cheeks stretch on one side and bunch up on
    # the other, so the jaw's edge does not shear sideways across the steep sides of the face
    shift = _jaw_weight(x, y, parts, band_share=0.5) * _ramp(ax, 0.7, 0.25)
    jaw_sideways = _vec(dx=0.03 * shift, n=n)
    puff = _gauss(ax, y, 0.30, -0.28, 0.11, 0.11)
    cheek_puff = _vec(dx=0.012 * _odd(x) * puff, dz=0.03 * puff, n=n)
    return [
        ("smile", smile), ("mouth open", mouth_open), ("brow raise", brow_raise),
        ("eye close", eye_close), ("frown", frown), ("pucker", pucker),
        ("jaw sideways", jaw_sideways), ("cheek puff", cheek_puff),
    ]


def _texture_designs(x, y, mean_colour, parts: _Parts):
    """Named texture components: (name, albedo change ``(N, 3)`` for one standard deviation)."""
    ax = np.abs(x)
    skin = (~parts.eye).astype(float)
    iris = (parts.eye & (parts.iris_r < IRIS_RADIUS)).astype(float)
    return [
        ("skin tone (dark to light)", 0.14 * mean_colour * skin[:, None]),
        ("redness", np.outer(skin * (1 + parts.cheek), [0.022, -0.012, -0.006])),
        ("yellowness", np.outer(skin, [0.012, 0.008, -0.022])),
        ("cheek blush", np.outer(_gauss(ax, y, 0.36, -0.08, 0.11, 0.09), [0.035, -0.01, -0.004])),
        ("lip redness", np.outer(parts.lips_soft, [0.045, -0.03, -0.015])),
        ("brow darkness", np.outer(parts.brow, [-0.09, -0.07, -0.06])),
        ("iris colour (brown to blue)", np.outer(iris, [-0.05, 0.02, 0.06])),
        ("eye shadow", np.outer(_gauss(ax, y, 0.31, 0.24, 0.12, 0.06) * skin,
                                [-0.03, -0.04, -0.02])),
    ]


# ----------------------------------------------------------------------------------------------
# the bases
# ----------------------------------------------------------------------------------------------


def _smooth_fields(x, y, weight, count):
    """``count`` smooth scalar fields ``(N, count)``: products of cosines across and down the
    face, lowest total frequency first, each multiplied by ``weight``."""
    X = np.clip((x + 1.0) / 2.0, 0, 1)
    Y = np.clip((y - Y_BOTTOM) / (Y_TOP - Y_BOTTOM), 0, 1)
    pairs = [(i, total - i) for total in range(count) for i in range(total + 1)][:count]
    fields = np.empty((len(x), count))
    for k, (i, j) in enumerate(pairs):
        fields[:, k] = np.cos(np.pi * i * X) * np.cos(np.pi * j * Y) * weight
    return fields


def _gram_schmidt(gram: np.ndarray, required: int, size: int):
    """Gram-Schmidt on a Gram matrix: keep columns in order, skipping any (after the first
    ``required``) that is nearly a combination of those kept, until ``size`` are kept.

    Returns the kept column indices and the Cholesky factor L of their Gram matrix: with A the
    kept columns, Q = A L^-T is orthonormal and diag(L) is the length of the part of each
    column that the ones before it do not explain (CholeskyQR, in float64).
    """
    kept: list[int] = []
    lower = np.zeros((size, size))
    for j in range(len(gram)):
        m = len(kept)
        proj = solve_triangular(lower[:m, :m], gram[kept, j], lower=True)
        residual2 = gram[j, j] - proj @ proj
        if residual2 > 1e-6 * gram[j, j]:
            kept.append(j)
            lower[m, :m], lower[m, m] = proj, np.sqrt(residual2)
        elif j < required:
            raise RuntimeError(f"designed component {j} repeats earlier ones")
        if len(kept) == size:
            return kept, lower
    raise RuntimeError(f"only {len(kept)} independent fields for a basis of {size}")


def _assemble(designs, fields, directions, size, decay=0.96):
    """A basis of ``size`` orthogonal columns ``(3N, size)`` and the names of the leading ones.

    Columns are Gram-Schmidt orthogonalised in order: first the named designs ``(N, 3)``, then
    each smooth scalar field times each of the three ``directions`` (x/y/z offsets or colour
    axes). Named columns keep their designed scale (minus their overlap with earlier ones) and
    are sorted by it; unnamed columns get lengths below the smallest named one, decaying
    geometrically like a PCA spectrum. A field-times-direction column is never formed: the
    Gram matrix and the result are computed from the fields, which keeps the build fast.
    """
    named = np.stack([design for _, design in designs], -1)  # (N, 3, k)
    n, _, k = named.shape
    m = fields.shape[1]
    directions = np.asarray(directions, dtype=np.float64)
    named_flat = named.reshape(3 * n, k)  # x, y, z interleaved, as in the BFM
    proj = (fields.T @ named.reshape(n, 3 * k)).reshape(m, 3, k)
    gram = np.empty((k + 3 * m, k + 3 * m))
    gram[:k, :k] = named_flat.T @ named_flat
    gram[:k, k:] = np.einsum("icj,dc->jid", proj, directions).reshape(k, 3 * m)
    gram[k:, :k] = gram[:k, k:].T
    gram[k:, k:] = np.kron(fields.T @ fields, directions @ directions.T)
    kept, chol = _gram_schmidt(gram, k, size)

    lengths = np.diag(chol)
    order = np.argsort(-lengths[:k], kind="stable")
    unnamed = 0.9 * lengths[:k].min() * decay ** np.arange(size - k)
    scales = np.concatenate([lengths[order], unnamed])
    # basis = A_kept @ mix, with Q = A_kept L^-T reordered and scaled column by column
    mix = solve_triangular(chol, np.eye(size), lower=True).T[:, np.r_[order, k:size]] * scales
    per_field = np.zeros((m, 3, size))
    for row, column in enumerate(kept[k:], start=k):
        field, direction = divmod(column - k, 3)
        per_field[field] += np.outer(directions[direction], mix[row])
    basis = (fields @ per_field.reshape(m, 3 * size)).reshape(3 * n, size)
    basis += named_flat @ mix[:k]
    return basis, [designs[i][0] for i in order]


def _moving_parts(x, y):
    """Where expressions may act: mouth and jaw, brows, eyelids."""
    ax = np.abs(x)
    mouth_jaw = _ramp(y, -0.05, -0.2) * _ramp(ax, 0.75, 0.55)
    brows = _gauss(ax, y, 0.3, 0.47, 0.22, 0.08)
    lids = _gauss(ax, y, EYE_X, EYE_Y + 0.02, 0.13, 0.07)
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


def _landmarks(x, y, faces, parts: _Parts) -> np.ndarray:
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


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals: area-weighted face normals summed around each vertex."""
    v1, v2, v3 = (vertices[faces[:, k]] for k in range(3))
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], np.cross(v2 - v1, v3 - v1))
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _point_buf(faces: np.ndarray, n: int) -> np.ndarray:
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


@functools.lru_cache(maxsize=1)
def build_open_face_model() -> MorphableArrays:
    """Build the open face model: deterministic, about a second on a CPU, cached so that it is
    built once per process (treat the returned arrays as read-only: they are shared)."""
    gx, gy, used, faces, grid_shape = _grid()
    gz = _neutral_depth(gx, gy)
    # creases for the albedo: how far each point lies below a blurred copy of the surface
    z2d = gz.reshape(grid_shape)
    cavity = (gaussian_filter(z2d, sigma=3.0, mode="nearest") - z2d).reshape(-1)
    x, y, z, cavity = gx[used], gy[used], gz[used], np.clip(cavity[used], 0.0, None)
    n = len(x)
    parts = _Parts(x, y)

    mean_shape = np.stack([x, y, z], 1)
    mean_tex = _mean_colour(x, y, cavity, _vertex_normals(mean_shape, faces)[:, 2], parts)

    xyz = np.eye(3)
    id_fields = _smooth_fields(x, y, np.ones(n), 30)
    id_basis, id_names = _assemble(_identity_designs(x, y, parts), id_fields, xyz, NUM_ID)
    exp_fields = _smooth_fields(x, y, _moving_parts(x, y), 24)
    exp_basis, exp_names = _assemble(_expression_designs(x, y, z, parts), exp_fields, xyz, NUM_EXP)
    chroma = np.array([[1.0, 1.0, 1.0], [1.0, -0.6, -0.4], [0.5, 0.4, -0.9]])  # light, red, yellow
    chroma /= np.linalg.norm(chroma, axis=1, keepdims=True)
    tex_fields = _smooth_fields(x, y, (~parts.eye).astype(float), 30)
    tex_designs = _texture_designs(x, y, mean_tex, parts)
    tex_basis, tex_names = _assemble(tex_designs, tex_fields, chroma, NUM_TEX)

    return MorphableArrays(
        mean_shape=mean_shape.astype(np.float32),
        id_basis=id_basis.astype(np.float32),
        exp_basis=exp_basis.astype(np.float32),
        mean_tex=mean_tex.reshape(-1).astype(np.float32),
        tex_basis=tex_basis.astype(np.float32),
        faces=faces.astype(np.int64),
        point_buf=_point_buf(faces, n),
        landmarks=_landmarks(x, y, faces, parts),
        skin_mask=~(parts.eye | parts.lips | parts.mouth_interior | (parts.brow > 0.5)
                    | (parts.nostril > 0.5)),
        regions=_regions(x, y, parts),
        region_names=REGION_NAMES,
        component_names={"id": id_names, "exp": exp_names, "tex": tex_names},
        name="open face model",
    ).validate()
