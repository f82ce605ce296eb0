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
from scipy.linalg import solve_triangular
from scipy.ndimage import gaussian_filter

from sgpn.face3d.builtin_geometry import (EYE_X, IRIS_RADIUS, IRIS_Y, MOUTH_BAND, MOUTH_CORNER_RISE, MOUTH_X, MOUTH_Y,
                                          PUPIL_RADIUS, REGION_NAMES, Y_BOTTOM, Y_TOP, FaceParts, gauss, grid,
                                          landmark_vertices, moving_parts, neutral_depth, nose_height, point_buf, ramp,
                                          vertex_normals, vertex_regions)
from sgpn.face3d.morphable import MorphableArrays

#: Components of each basis (the BFM's layout).
NUM_ID, NUM_EXP, NUM_TEX = 80, 64, 80

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


def _odd(x, width=0.05):
    """A smooth stand-in for sign(x): fields that push sideways must vanish at the midline."""
    return np.tanh(x / width)


def _mean_colour(x, y, cavity, facing, parts: FaceParts) -> np.ndarray:
    """Albedo of the mean face: skin, lips, brows, eyes, nostrils.

    Like the BFM's mean texture (captured under soft light), it carries a little baked shading:
    creases (``cavity``, depth below a blurred surface) and surfaces turned away from the camera
    (``facing``, the z of the normal) are darker, so the face reads in 3D even unlit.
    """
    ax = np.abs(x)
    rng = np.random.default_rng(7)
    colour = np.tile(SKIN, (len(x), 1))
    colour += np.outer(parts.cheek, [0.04, -0.015, -0.01])
    colour += np.outer(gauss(x, y, 0.0, -0.05, 0.05, 0.06), [0.03, -0.02, -0.015])
    colour += np.outer(gauss(ax, y, 0.31, 0.24, 0.12, 0.05), [-0.04, -0.05, -0.03])
    colour += np.outer(ramp(y, 0.5, 0.9), [0.01, 0.01, 0.0])
    shade = (1.0 - np.clip(6.0 * cavity, 0.0, 0.45)) * (0.78 + 0.22 * np.clip(facing, 0.0, 1.0))
    colour *= shade[:, None]
    crease = (np.exp(-0.5 * ((y - parts.yu - 0.035) / 0.01) ** 2)
              * ramp(1.0 - np.abs(parts.u), 0.0, 0.5))
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
    caruncle = ramp(-parts.u, 0.8, 0.95)
    sclera += np.outer(caruncle, [-0.05, -0.3, -0.3])
    angle = np.arctan2(y - IRIS_Y, ax - EYE_X)
    iris = IRIS * (1.0 + 0.12 * np.sin(17 * angle) * (parts.iris_r / IRIS_RADIUS))[:, None]
    iris = iris - np.outer(ramp(parts.iris_r, 0.8 * IRIS_RADIUS, IRIS_RADIUS), [0.18, 0.13, 0.09])
    w_iris = ramp(parts.iris_r, IRIS_RADIUS + 0.004, IRIS_RADIUS - 0.004)
    w_pupil = ramp(parts.iris_r, PUPIL_RADIUS + 0.003, PUPIL_RADIUS - 0.003)
    eye_colour = sclera + w_iris[:, None] * (iris - sclera)
    eye_colour += w_pupil[:, None] * (PUPIL - eye_colour)
    upper_shadow = ramp(y, parts.yu - 0.025, parts.yu)[:, None] * 0.35
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


def _jaw_weight(x, y, parts: FaceParts, band_share: float):
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
    past_corner = ramp(ax, MOUTH_X - 0.03, MOUTH_X + 0.05)
    band = (1.0 - past_corner) * band_t + past_corner * ramp(band_t, 0.0, 1.0)
    broad = ramp(y, split + 0.15 + 0.3 * past, split - 0.2)
    return band_share * band + (1.0 - band_share) * broad


def _identity_designs(x, y, parts: FaceParts):
    """Named identity components: (name, vertex offsets ``(N, 3)`` for one standard deviation)."""
    n, ax = len(x), np.abs(x)
    nose = nose_height(x, y)
    lip_zone = gauss(x, y, 0.0, MOUTH_Y - 0.01, 0.15, 0.07)
    cheek = gauss(ax, y, 0.42, -0.12, 0.15, 0.15)
    return [
        ("face width", _vec(dx=0.045 * x, n=n)),
        ("face length", _vec(dy=0.04 * y, n=n)),
        ("jaw width", _vec(dx=0.06 * x * ramp(y, -0.1, -0.7), n=n)),
        ("chin length", _vec(dy=-0.03 * ramp(y, -0.42, -0.85), n=n)),
        ("nose size", _vec(dy=-0.012 * gauss(x, y, 0.0, -0.08, 0.08, 0.06), dz=0.14 * nose, n=n)),
        ("nose width", _vec(dx=0.2 * x * gauss(x, y, 0.0, -0.1, 0.12, 0.08), n=n)),
        ("eye spacing", _vec(dx=0.02 * _odd(x) * gauss(ax, y, 0.31, 0.31, 0.13, 0.11), n=n)),
        ("brow height", _vec(dy=0.02 * gauss(ax, y, 0.32, 0.49, 0.2, 0.06), n=n)),
        ("lip fullness", _vec(dy=0.25 * (y - parts.line) * lip_zone, dz=0.015 * lip_zone, n=n)),
        ("cheek fullness", _vec(dx=0.015 * _odd(x) * cheek, dz=0.03 * cheek, n=n)),
    ]


def _expression_designs(x, y, z, parts: FaceParts):
    """Named expressions: (name, vertex offsets ``(N, 3)`` for one standard deviation)."""
    n = len(x)
    ax = np.abs(x)
    # smile: corners up, out and back; cheeks lift
    corner = gauss(ax, y, MOUTH_X, MOUTH_Y + MOUTH_CORNER_RISE, 0.09, 0.07)
    lift = gauss(ax, y, 0.33, -0.12, 0.12, 0.10)
    smile = _vec(dx=0.022 * _odd(x) * corner, dy=0.025 * corner + 0.012 * lift,
                 dz=-0.006 * corner + 0.012 * lift, n=n)
    # mouth open: the jaw turns about a hinge in front of the ears
    hinge_y, hinge_z, angle = 0.1, -0.45, 0.055
    jaw = _jaw_weight(x, y, parts, band_share=0.28)
    mouth_open = _vec(dy=-angle * (z - hinge_z) * jaw, dz=angle * (y - hinge_y) * jaw, n=n)
    # brow raise: brows and lower forehead up, upper lids stretch, eye openings stay
    raise_w = (ramp(y, 0.355, 0.5) * ramp(y, 0.95, 0.5) * ramp(ax, 0.75, 0.5)
               * (0.5 + 0.5 * ramp(ax, 0.04, 0.2)))
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
    knit = gauss(ax, y, 0.17, 0.47, 0.09, 0.06)
    frown = _vec(dx=-0.015 * _odd(x, 0.04) * knit, dy=-0.02 * knit, dz=0.006 * knit, n=n)
    # pucker: lips forward and together
    lips = gauss(x, y, 0.0, MOUTH_Y, 0.17, 0.10)
    pucker = _vec(dx=-0.25 * x * lips, dz=0.035 * lips, n=n)
    # jaw sideways: chin and lower lip shift; the cheeks stretch on one side and bunch up on
    # the other, so the jaw's edge does not shear sideways across the steep sides of the face
    shift = _jaw_weight(x, y, parts, band_share=0.5) * ramp(ax, 0.7, 0.25)
    jaw_sideways = _vec(dx=0.03 * shift, n=n)
    puff = gauss(ax, y, 0.30, -0.28, 0.11, 0.11)
    cheek_puff = _vec(dx=0.012 * _odd(x) * puff, dz=0.03 * puff, n=n)
    return [
        ("smile", smile), ("mouth open", mouth_open), ("brow raise", brow_raise),
        ("eye close", eye_close), ("frown", frown), ("pucker", pucker),
        ("jaw sideways", jaw_sideways), ("cheek puff", cheek_puff),
    ]


def _texture_designs(x, y, mean_colour, parts: FaceParts):
    """Named texture components: (name, albedo change ``(N, 3)`` for one standard deviation)."""
    ax = np.abs(x)
    skin = (~parts.eye).astype(float)
    iris = (parts.eye & (parts.iris_r < IRIS_RADIUS)).astype(float)
    return [
        ("skin tone (dark to light)", 0.14 * mean_colour * skin[:, None]),
        ("redness", np.outer(skin * (1 + parts.cheek), [0.022, -0.012, -0.006])),
        ("yellowness", np.outer(skin, [0.012, 0.008, -0.022])),
        ("cheek blush", np.outer(gauss(ax, y, 0.36, -0.08, 0.11, 0.09), [0.035, -0.01, -0.004])),
        ("lip redness", np.outer(parts.lips_soft, [0.045, -0.03, -0.015])),
        ("brow darkness", np.outer(parts.brow, [-0.09, -0.07, -0.06])),
        ("iris colour (brown to blue)", np.outer(iris, [-0.05, 0.02, 0.06])),
        ("eye shadow", np.outer(gauss(ax, y, 0.31, 0.24, 0.12, 0.06) * skin,
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


@functools.lru_cache(maxsize=1)
def build_open_face_model() -> MorphableArrays:
    """Build the open face model: deterministic, about a second on a CPU, cached so that it is
    built once per process (treat the returned arrays as read-only: they are shared)."""
    gx, gy, used, faces, grid_shape = grid()
    gz = neutral_depth(gx, gy)
    # creases for the albedo: how far each point lies below a blurred copy of the surface
    z2d = gz.reshape(grid_shape)
    cavity = (gaussian_filter(z2d, sigma=3.0, mode="nearest") - z2d).reshape(-1)
    x, y, z, cavity = gx[used], gy[used], gz[used], np.clip(cavity[used], 0.0, None)
    n = len(x)
    parts = FaceParts(x, y)

    mean_shape = np.stack([x, y, z], 1)
    mean_tex = _mean_colour(x, y, cavity, vertex_normals(mean_shape, faces)[:, 2], parts)

    xyz = np.eye(3)
    id_fields = _smooth_fields(x, y, np.ones(n), 30)
    id_basis, id_names = _assemble(_identity_designs(x, y, parts), id_fields, xyz, NUM_ID)
    exp_fields = _smooth_fields(x, y, moving_parts(x, y), 24)
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
        point_buf=point_buf(faces, n),
        landmarks=landmark_vertices(x, y, faces, parts),
        skin_mask=~(parts.eye | parts.lips | parts.mouth_interior | (parts.brow > 0.5)
                    | (parts.nostril > 0.5)),
        regions=vertex_regions(x, y, parts),
        region_names=REGION_NAMES,
        component_names={"id": id_names, "exp": exp_names, "tex": tex_names},
        name="open face model",
    ).validate()
