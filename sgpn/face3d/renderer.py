"""Rendering a face: a fast vectorised CPU rasterizer and the official PyTorch3D path.

Both rasterizers return PyTorch3D ``Fragments`` for the same camera (:mod:`sgpn.face3d.camera`), so
everything downstream (``interpolate_face_attributes``, PyTorch3D's shaders) is shared.

Why a hand-written rasterizer: PyTorch3D's CPU rasterizer loops over every face for every pixel
(about 20 s for a 224 x 224 frame of a BFM-size mesh), which rules out CPU training and live
sliders. Face meshes are made of many tiny triangles, so :func:`rasterize` instead enumerates
the pixels inside each face's bounding box all at once, resolves visibility with one
``scatter_reduce`` over a packed (depth, face) key, and recomputes the barycentrics of the
winning (pixel, face) pairs with autograd on. It follows PyTorch3D's rules exactly (pixel
centres, strictly-inside test, perspective-correct barycentrics, nearest depth wins with ties
to the lower face index, faces clipped at ``z_clip``), so the two agree pixel for pixel up to
floating-point ties on shared edges.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from pytorch3d.ops import interpolate_face_attributes
from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
from pytorch3d.renderer.mesh.rasterizer import Fragments
from pytorch3d.structures import Meshes
from torch import nn

from sgpn.face3d import camera
from sgpn.face3d.face_model import FaceOutput

#: PyTorch3D's rasterizer epsilon (degenerate faces, depth validity).
_EPS = 1e-8
#: Like PyTorch3D with the official znear=5: geometry nearer than znear / 2 is clipped away.
DEFAULT_Z_CLIP = 2.5


def _fragments_class():
    return Fragments


def check_mesh(vertices: torch.Tensor, faces: torch.Tensor) -> None:
    """Raise a clear error for meshes the rasterizers cannot take."""
    if not isinstance(vertices, torch.Tensor) or not vertices.is_floating_point():
        raise TypeError(f"vertices must be a floating-point tensor, got {getattr(vertices, 'dtype', type(vertices))}")
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must have shape (B, N, 3), got {tuple(vertices.shape)}")
    if not torch.isfinite(vertices).all():
        raise ValueError("vertices contain NaN or Inf")
    if faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces must be an integer tensor, got {faces.dtype}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.numel() and (faces.min() < 0 or faces.max() >= vertices.shape[1]):
        raise ValueError(
            f"faces index vertices in [{faces.min()}, {faces.max()}] but there are "
            f"{vertices.shape[1]} vertices"
        )


def _edge(px, py, ax, ay, bx, by):
    """PyTorch3D's edge function: twice the signed area of (p, a, b)."""
    return (px - ax) * (by - ay) - (py - ay) * (bx - ax)


def _clip_faces(face_verts: torch.Tensor, z_clip: float):
    """Clip faces ``(B, F, 3, 3)`` against the plane z = z_clip, as PyTorch3D does.

    Returns the sub-triangles' vertices ``(S, 3, 3)``, the (batch, face) each came from, and
    for clipped ones a ``(3, 3)`` matrix mapping sub-triangle barycentrics to the original
    face's (``None`` when nothing was clipped). Faces entirely behind the plane are dropped.
    """
    B, F = face_verts.shape[:2]
    behind = face_verts[..., 2] < z_clip  # (B, F, 3)
    n_behind = behind.sum(-1)
    batch_idx, face_idx = (n_behind == 0).nonzero(as_tuple=True)
    kept = face_verts[batch_idx, face_idx]
    cut_b, cut_f = ((n_behind == 1) | (n_behind == 2)).nonzero(as_tuple=True)
    if cut_b.numel() == 0:
        return kept, batch_idx, face_idx, None

    cut = face_verts[cut_b, cut_f]  # (C, 3, 3)
    cut_behind = behind[cut_b, cut_f]
    one_behind = n_behind[cut_b, cut_f] == 1
    # Rotate each face's vertex order (keeping its winding) so that vertex 0 is the odd one
    # out: the single vertex behind (one_behind) or the single vertex in front.
    odd = torch.where(one_behind[:, None], cut_behind, ~cut_behind).float().argmax(-1)
    order = (odd[:, None] + torch.arange(3, device=cut.device)) % 3
    rot = torch.gather(cut, 1, order[..., None].expand(-1, -1, 3))
    eye = torch.eye(3, dtype=cut.dtype, device=cut.device)
    basis = eye[order]  # barycentric position of each rotated vertex in the original face

    def crossing(a: int, b: int):
        t = ((z_clip - rot[:, a, 2]) / (rot[:, b, 2] - rot[:, a, 2]))[:, None]
        return rot[:, a] + t * (rot[:, b] - rot[:, a]), basis[:, a] + t * (basis[:, b] - basis[:, a])

    p01, w01 = crossing(0, 1)
    p02, w02 = crossing(0, 2)
    sub_v, sub_w, owner = [], [], []
    # Vertex 0 in front, 1 and 2 behind: one triangle (v0, p01, p02).
    sel = ~one_behind
    sub_v.append(torch.stack([rot[:, 0], p01, p02], 1)[sel])
    sub_w.append(torch.stack([basis[:, 0], w01, w02], 1)[sel])
    owner.append(sel.nonzero(as_tuple=True)[0])
    # Vertex 0 behind: the quad (p01, v1, v2, p02) as PyTorch3D splits it, along v1-p02.
    sel = one_behind
    sub_v.append(torch.stack([p01, rot[:, 1], p02], 1)[sel])
    sub_w.append(torch.stack([w01, basis[:, 1], w02], 1)[sel])
    owner.append(sel.nonzero(as_tuple=True)[0])
    sub_v.append(torch.stack([p02, rot[:, 1], rot[:, 2]], 1)[sel])
    sub_w.append(torch.stack([w02, basis[:, 1], basis[:, 2]], 1)[sel])
    owner.append(sel.nonzero(as_tuple=True)[0])
    owner = torch.cat(owner)
    n_kept = kept.shape[0]
    bary_map = torch.cat([eye.expand(n_kept, 3, 3), torch.cat(sub_w)])
    return (
        torch.cat([kept, torch.cat(sub_v)]),
        torch.cat([batch_idx, cut_b[owner]]),
        torch.cat([face_idx, cut_f[owner]]),
        bary_map,
    )


def _screen(points: torch.Tensor, image_size: int) -> torch.Tensor:
    """Camera-space points to (pixel x, pixel y, depth)."""
    return torch.cat([camera.project(points, image_size), points[..., 2:]], dim=-1)


def _barycentrics(px, py, tri):
    """Screen-space and perspective-correct barycentrics of pixels in triangles ``(..., 3, 3)``."""
    (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = (tri[..., k, :].unbind(-1) for k in range(3))
    area = _edge(x2, y2, x0, y0, x1, y1)
    w0 = _edge(px, py, x1, y1, x2, y2) / area
    w1 = _edge(px, py, x2, y2, x0, y0) / area
    w2 = _edge(px, py, x0, y0, x1, y1) / area
    t0, t1, t2 = w0 * z1 * z2, w1 * z0 * z2, w2 * z0 * z1
    denom = (t0 + t1 + t2).clamp_min(_EPS)
    return torch.stack([t0 / denom, t1 / denom, t2 / denom], -1)


def _point_triangle_distance2(px, py, tri):
    """Squared distance from pixel centres to the triangle's edges (PyTorch3D's ``dists``)."""
    best = None
    for a, b in ((0, 1), (1, 2), (2, 0)):
        ax, ay, bx, by = tri[..., a, 0], tri[..., a, 1], tri[..., b, 0], tri[..., b, 1]
        ex, ey = bx - ax, by - ay
        t = (((px - ax) * ex + (py - ay) * ey) / (ex * ex + ey * ey).clamp_min(_EPS)).clamp(0, 1)
        d = (px - ax - t * ex) ** 2 + (py - ay - t * ey) ** 2
        best = d if best is None else torch.minimum(best, d)
    return best


def rasterize(
    vertices: torch.Tensor, faces: torch.Tensor, image_size: int = 224,
    z_clip: float = DEFAULT_Z_CLIP,
):
    """Hard-rasterize camera-space meshes ``(B, N, 3)`` sharing ``faces`` ``(F, 3)``.

    Returns PyTorch3D ``Fragments`` (one face per pixel) with ``pix_to_face`` holding packed
    face indices (``b * F + f``) like PyTorch3D does, ``zbuf`` the camera depth, and
    ``bary_coords`` differentiable with respect to ``vertices``. ``dists`` holds the squared
    distance to the nearest edge in NDC units, negative inside, as in PyTorch3D.
    """
    check_mesh(vertices, faces)
    B, F = vertices.shape[0], faces.shape[0]
    H = W = int(image_size)
    device = vertices.device
    with torch.no_grad():
        detached = vertices.detach()
        if detached[..., 2].min() >= z_clip:  # the usual case: nothing to clip
            tris = _screen(detached, image_size)[:, faces].reshape(B * F, 3, 3)
            batch_idx = torch.arange(B, device=device).repeat_interleave(F)
            face_idx = torch.arange(F, device=device).repeat(B)
            bary_map = None
        else:  # clip in camera space, before projection
            tris, batch_idx, face_idx, bary_map = _clip_faces(detached[:, faces], z_clip)
            tris = _screen(tris, image_size)
        x, y, z = tris[..., 0], tris[..., 1], tris[..., 2]
        ndc_area = _edge(x[:, 2], y[:, 2], x[:, 0], y[:, 0], x[:, 1], y[:, 1]) * (2.0 / W) * (2.0 / H)
        x_lo = x.amin(-1).ceil().clamp_min(0)
        x_hi = x.amax(-1).floor().clamp_max(W - 1)
        y_lo = y.amin(-1).ceil().clamp_min(0)
        y_hi = y.amax(-1).floor().clamp_max(H - 1)
        ok = (ndc_area.abs() > _EPS) & (x_hi >= x_lo) & (y_hi >= y_lo)
        sub = ok.nonzero(as_tuple=True)[0]
        width = (x_hi - x_lo + 1)[sub].long()
        counts = width * (y_hi - y_lo + 1)[sub].long()
        pair = torch.repeat_interleave(torch.arange(sub.numel(), device=device), counts)
        offsets = torch.arange(pair.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[pair]
        pair_w = width[pair]
        pair_sub = sub[pair]
        px = x_lo[pair_sub] + offsets % pair_w
        py = y_lo[pair_sub] + torch.div(offsets, pair_w, rounding_mode="floor")
        bary = _barycentrics(px, py, tris[pair_sub])
        pz = (bary * z[pair_sub]).sum(-1)
        hit = (bary > 0).all(-1) & (pz >= 0)
        pair_sub, px, py, pz = pair_sub[hit], px[hit], py[hit], pz[hit]

        # Nearest depth wins, ties to the lower face index: one int64 key per (pixel, face).
        # Non-negative float32 depths keep their order when read as int32 bits.
        packed_face = batch_idx[pair_sub] * F + face_idx[pair_sub]
        key = (pz.float().view(torch.int32).long() << 32) | packed_face
        pixel = (batch_idx[pair_sub] * H + py.long()) * W + px.long()
        best = torch.full((B * H * W,), torch.iinfo(torch.int64).max, device=device)
        best.scatter_reduce_(0, pixel, key, reduce="amin")
        win = (key == best[pixel]).nonzero(as_tuple=True)[0]
        # A face split by clipping can win one pixel twice: keep one pair per pixel.
        chosen = torch.full((B * H * W,), -1, dtype=torch.long, device=device)
        chosen.scatter_reduce_(0, pixel[win], win, reduce="amax")
        win = chosen[chosen >= 0]
        win_pixel, win_sub = pixel[win], pair_sub[win]
        win_px, win_py = px[win], py[win]

    # Differentiable part: barycentrics of the winners, recomputed from the vertices.
    win_cam = vertices[batch_idx[win_sub][:, None], faces[face_idx[win_sub]]]  # (P, 3, 3)
    if bary_map is not None:
        win_cam = bary_map[win_sub] @ win_cam
    win_tris = _screen(win_cam, image_size)
    win_bary = _barycentrics(win_px, win_py, win_tris)
    win_z = (win_bary * win_tris[..., 2]).sum(-1)
    if bary_map is not None:
        win_bary = (win_bary[:, None, :] @ bary_map[win_sub]).squeeze(1)
    win_dist = -_point_triangle_distance2(win_px, win_py, win_tris.detach()) * (2.0 / W) ** 2

    pix_to_face = torch.full((B * H * W,), -1, dtype=torch.long, device=device)
    pix_to_face[win_pixel] = batch_idx[win_sub] * F + face_idx[win_sub]
    bary_coords = vertices.new_full((B * H * W, 3), -1.0).index_put((win_pixel,), win_bary)
    zbuf = vertices.new_full((B * H * W,), -1.0).index_put((win_pixel,), win_z)
    dists = vertices.new_full((B * H * W,), -1.0).index_put((win_pixel,), win_dist)
    return _fragments_class()(
        pix_to_face=pix_to_face.view(B, H, W, 1),
        zbuf=zbuf.view(B, H, W, 1),
        bary_coords=bary_coords.view(B, H, W, 1, 3),
        dists=dists.view(B, H, W, 1),
    )


def rasterize_pytorch3d(vertices: torch.Tensor, faces: torch.Tensor, image_size: int = 224):
    """PyTorch3D's ``MeshRasterizer`` set up as the official SGPN renderer does.

    FoV perspective camera looking from distance 10, fov = 2 atan(112 / 1015), hard
    rasterization (blur 0, one face per pixel); ``z_clip`` defaults to znear / 2 = 2.5.
    """
    check_mesh(vertices, faces)
    B = vertices.shape[0]
    rasterizer = MeshRasterizer(
        cameras=camera.pytorch3d_cameras(B, vertices.device),
        raster_settings=RasterizationSettings(image_size=image_size, blur_radius=0.0, faces_per_pixel=1),
    )
    meshes = Meshes(verts=camera.to_world(vertices), faces=faces[None].expand(B, -1, -1))
    return rasterizer(meshes)


BACKENDS = {"fast": rasterize, "pytorch3d": rasterize_pytorch3d}


class RenderOutput(NamedTuple):
    """A rendered batch: what SGPN's shape branch consumes."""

    image: torch.Tensor  # (B, 3, H, W) pre-lit vertex colours, background 0, not clipped
    mask: torch.Tensor  # (B, 1, H, W) 1 where a face covers the pixel
    landmarks: torch.Tensor  # (B, 68, 2) pixel coordinates (x right, y down, centres at integers)
    fragments: object  # PyTorch3D Fragments, for PyTorch3D's interpolation and shaders


class Renderer(nn.Module):
    """Render :class:`~sgpn.face3d.face_model.FaceOutput` to an image, mask and 2D landmarks.

    ``backend="auto"`` uses PyTorch3D on CUDA (as the official release does) and the fast
    rasterizer on CPU; both see the same camera and give the same fragments.
    """

    def __init__(self, image_size: int = 224, backend: str = "auto"):
        super().__init__()
        if backend not in ("auto", *BACKENDS):
            raise ValueError(f"backend must be 'auto', 'fast' or 'pytorch3d', got {backend!r}")
        if int(image_size) != image_size or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        self.image_size = int(image_size)
        self.backend = backend

    def backend_for(self, device: torch.device) -> str:
        if self.backend != "auto":
            return self.backend
        return "pytorch3d" if device.type == "cuda" else "fast"

    def forward(self, face: FaceOutput, faces: torch.Tensor) -> RenderOutput:
        vertices, colors = face.vertices, face.colors
        B, N = vertices.shape[:2]
        if colors.shape != vertices.shape:
            raise ValueError(f"colors {tuple(colors.shape)} must match vertices {tuple(vertices.shape)}")
        fragments = BACKENDS[self.backend_for(vertices.device)](vertices, faces, self.image_size)
        offsets = torch.arange(B, device=faces.device)[:, None, None] * N
        faces_packed = (faces[None] + offsets).reshape(-1, 3)
        face_colors = colors.reshape(B * N, 3)[faces_packed]
        image = interpolate_face_attributes(fragments.pix_to_face, fragments.bary_coords, face_colors)
        mask = (fragments.pix_to_face[..., 0] >= 0).to(colors.dtype)
        return RenderOutput(
            image=image[..., 0, :].permute(0, 3, 1, 2),
            mask=mask[:, None],
            landmarks=camera.project(face.landmarks_3d, self.image_size),
            fragments=fragments,
        )
