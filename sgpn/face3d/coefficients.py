"""The 257-value 3DMM coefficient layout shared by D3DFR and the official SGPN release.

Order: identity [0:80], expression [80:144], texture [144:224], Euler angles [224:227],
SH lighting gamma [227:254], translation [254:257]. The six pose values are not contiguous,
so code should always go through :func:`split` / :func:`merge` rather than slicing by hand.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: (name, size) in storage order.
LAYOUT: tuple[tuple[str, int], ...] = (
    ("id", 80),
    ("exp", 64),
    ("tex", 80),
    ("angles", 3),
    ("gamma", 27),
    ("trans", 3),
)
NUM_COEFFS = sum(size for _, size in LAYOUT)

#: name -> slice into the 257 vector.
SLICES: dict[str, slice] = {}
_start = 0
for _name, _size in LAYOUT:
    SLICES[_name] = slice(_start, _start + _size)
    _start += _size
del _start, _name, _size


class Coefficients(NamedTuple):
    """The six named parts of a batch of 257-d coefficient vectors (each ``B x size``)."""

    id: torch.Tensor
    exp: torch.Tensor
    tex: torch.Tensor
    angles: torch.Tensor
    gamma: torch.Tensor
    trans: torch.Tensor


def check_coefficients(coeffs: torch.Tensor, name: str = "coeffs") -> torch.Tensor:
    """Return ``coeffs`` as a ``B x 257`` floating tensor, or raise a clear error."""
    if not isinstance(coeffs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(coeffs).__name__}")
    if not coeffs.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {coeffs.dtype}")
    if coeffs.dim() == 1:
        coeffs = coeffs[None]
    if coeffs.dim() != 2 or coeffs.shape[1] != NUM_COEFFS:
        raise ValueError(f"{name} must have shape (B, {NUM_COEFFS}), got {tuple(coeffs.shape)}")
    if not torch.isfinite(coeffs).all():
        bad = (~torch.isfinite(coeffs)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or Inf (first at batch {bad[0]}, index {bad[1]})")
    return coeffs


def split(coeffs: torch.Tensor) -> Coefficients:
    """Split ``B x 257`` (or ``257``) coefficients into their named parts."""
    coeffs = check_coefficients(coeffs)
    return Coefficients(**{name: coeffs[:, sl] for name, sl in SLICES.items()})


def merge(
    id: torch.Tensor | None = None,
    exp: torch.Tensor | None = None,
    tex: torch.Tensor | None = None,
    angles: torch.Tensor | None = None,
    gamma: torch.Tensor | None = None,
    trans: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Assemble a ``B x 257`` vector from named parts; parts left out are zero."""
    parts = dict(id=id, exp=exp, tex=tex, angles=angles, gamma=gamma, trans=trans)
    given = {k: v for k, v in parts.items() if v is not None}
    ref = next(iter(given.values()), None)
    if batch_size is None:
        batch_size = 1 if ref is None else (ref.shape[0] if ref.dim() == 2 else 1)
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else None
    chunks = []
    for name, size in LAYOUT:
        part = given.get(name)
        if part is None:
            part = torch.zeros(batch_size, size, dtype=dtype, device=device)
        else:
            if part.dim() == 1:
                part = part[None].expand(batch_size, -1)
            if part.shape != (batch_size, size):
                raise ValueError(
                    f"coefficient part '{name}' must have shape ({batch_size}, {size}), "
                    f"got {tuple(part.shape)}"
                )
        chunks.append(part.to(dtype))
    return torch.cat(chunks, dim=1)
