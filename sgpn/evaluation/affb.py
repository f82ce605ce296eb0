"""What AFFB's masks do: their mean on occluder, skin and background pixels per resolution, and
the image error when they are set by hand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

from sgpn.checkpoints import load
from sgpn.data.face_painter import OCCLUDERS
from sgpn.evaluation.kit_models import LADDER
from sgpn.evaluation.metrics import vertex_error
from sgpn.paths import KIT_CHECKPOINTS
from sgpn.nets.generator import overridden_masks

#: AFFB masks are analysed at these resolutions and above.
AFFB_MIN_RESOLUTION = 16
#: The kit's target for the occluder/skin ratio at the two highest resolutions, after the paper.
AFFB_RATIO_TARGET = 1.3


@dataclass
class AFFBStatistics:
    """Channel-mean AFFB masks (the weight of F_lq) on occluder and skin pixels, per resolution."""

    occluder: dict[int, float]  # mean M over occluder pixels of all images
    skin: dict[int, float]  # mean M over visible face pixels not covered by an occluder
    background: dict[int, float]  # mean M where neither the face nor an occluder is (hair, backdrop)
    per_image_ratio: dict[int, torch.Tensor]  # occluder / skin mean per image with occluders
    mean_masks: dict[int, torch.Tensor]  # (N, 1, r, r) channel- and block-mean masks
    num_images: int
    occluder_l1: dict[str, float]  # mean |image - HQ| on occluder pixels: "output" and "i3d"
    sunglasses_l1: dict[str, float]  # the same on faces whose only occluder is a pair of sunglasses
    #: per image and resolution: summed M and cell count on occluders, then on skin, ``(N, 4)``
    per_image_sums: dict[int, torch.Tensor]

    @property
    def ratio(self) -> dict[int, float]:
        return {r: self.occluder[r] / self.skin[r] for r in self.occluder}

    def ratio_se(self, resamples: int = 1000, seed: int = 0) -> dict[int, float]:
        """The standard error of :attr:`ratio` over the test faces: the spread of the pooled
        ratio over bootstrap resamples of the images (seeded)."""
        generator = torch.Generator().manual_seed(seed)
        errors = {}
        for res, sums in self.per_image_sums.items():
            draws = torch.randint(len(sums), (resamples, len(sums)), generator=generator)
            totals = sums[draws].sum(1)  # (resamples, 4)
            errors[res] = ((totals[:, 0] / totals[:, 1]) / (totals[:, 2] / totals[:, 3])).std().item()
        return errors

    def summary(self) -> dict:
        """The pooled numbers, JSON-friendly (keys are resolutions as strings)."""
        def rounded(values):
            return {str(r): round(v, 4) for r, v in values.items()}

        return {"images": self.num_images, "ratio": rounded(self.ratio),
                "occluder_mean": rounded(self.occluder), "skin_mean": rounded(self.skin),
                "background_mean": rounded(self.background),
                **{f"occluder_l1_{name}": round(v, 4) for name, v in self.occluder_l1.items()},
                **{f"sunglasses_l1_{name}": round(v, 4) for name, v in self.sunglasses_l1.items()}}


@torch.no_grad()
def affb_statistics(module, test_set: Mapping[str, torch.Tensor], batch_size: int = 64) -> AFFBStatistics:
    """AFFB's mask M (F = F_3d + M (F_lq − F_3d), so M = 1 takes F_lq) averaged over channels and
    both blocks at every resolution ≥ 16, on occluder against skin pixels; and the mean L1 to
    the HQ image of the output and of I_3d on occluder pixels.

    Occluder and face masks are area-averaged to each resolution; a cell counts as occluder
    where an occluder covers more than half of it, as skin where the rendered face covers more
    than half and no occluder touches it, as background where neither touches it.
    """
    if module.generator.config.fusion != "affb":
        raise ValueError(f"AFFB statistics need a model with AFFB; this one has fusion="
                         f"{module.generator.config.fusion!r}")

    masks: dict[int, list[torch.Tensor]] = {}
    errors: dict[str, list[torch.Tensor]] = {"output": [], "i3d": []}  # per image: summed |image - HQ|
    for start in range(0, len(test_set["lq"]), batch_size):
        restored = module.restore(test_set["lq"][start:start + batch_size], true_coefficients(module, test_set, start,
                                                                                              batch_size))
        hq = test_set["hq"][start:start + batch_size]
        cover = test_set["occluder_mask"][start:start + batch_size].float()
        for name, image in (("output", restored.output), ("i3d", restored.i3d)):
            errors[name].append(((image - hq).abs() * cover).flatten(1).sum(1))
        for res in sorted({r for r, _ in restored.masks if r >= AFFB_MIN_RESOLUTION}):
            blocks = [m.mean(1, keepdim=True) for (r, _), m in restored.masks.items() if r == res]
            masks.setdefault(res, []).append(torch.stack(blocks).mean(0))
    mean_masks = {res: torch.cat(parts) for res, parts in masks.items()}
    occluder, skin, background, per_image, per_image_sums = {}, {}, {}, {}, {}
    for res, mask in mean_masks.items():
        cover = F.adaptive_avg_pool2d(test_set["occluder_mask"].float(), res)
        face = F.adaptive_avg_pool2d(test_set["face_mask"].float(), res)
        on_occluder, on_skin = cover > 0.5, (face > 0.5) & (cover == 0)
        occluder[res] = mask[on_occluder].mean().item()
        skin[res] = mask[on_skin].mean().item()
        background[res] = mask[(face == 0) & (cover == 0)].mean().item()
        has = on_occluder.flatten(1).any(1) & on_skin.flatten(1).any(1)
        sums = lambda where: (mask * where).flatten(1).sum(1) / where.flatten(1).sum(1).clamp(min=1)  # noqa: E731
        per_image[res] = (sums(on_occluder) / sums(on_skin))[has]
        per_image_sums[res] = torch.stack([(mask * on_occluder).flatten(1).sum(1), on_occluder.flatten(1).sum(1),
                                           (mask * on_skin).flatten(1).sum(1), on_skin.flatten(1).sum(1)], 1).double()
    pixels = 3 * test_set["occluder_mask"].float().flatten(1).sum(1)
    only_sunglasses = test_set["occluders"][:, OCCLUDERS.index("sunglasses")] & (test_set["occluders"].sum(1) == 1)

    def mean_l1(faces: torch.Tensor) -> dict[str, float]:
        return {name: (torch.cat(parts)[faces].sum() / pixels[faces].sum().clamp(min=1)).item()
                for name, parts in errors.items()}

    return AFFBStatistics(occluder, skin, background, per_image, mean_masks, len(test_set["lq"]),
                          mean_l1(torch.ones_like(only_sunglasses)), mean_l1(only_sunglasses), per_image_sums)


def true_coefficients(module, test_set: Mapping[str, torch.Tensor], start: int, count: int) -> torch.Tensor | None:
    """The test faces' true coefficients for a model whose I_3d needs them (the prior ladder's
    ``mix`` and ``oracle``), else ``None``."""
    if not getattr(module, "prior_weight", 0):
        return None
    return test_set["coeffs"][start:start + count]


def single_occluder_faces(test_set: Mapping[str, torch.Tensor], kinds=("sunglasses", "hand", "hat"),
                          required: bool = True) -> dict[str, int]:
    """The first face of the test set wearing each kind of occluder and nothing else; with
    ``required=False`` a kind no face wears alone is left out (at least one must be found)."""
    alone = test_set["occluders"].sum(1) == 1
    faces = {}
    for kind in kinds:
        wearing = (test_set["occluders"][:, OCCLUDERS.index(kind)] & alone).nonzero()[:, 0]
        if len(wearing):
            faces[kind] = int(wearing[0])
        elif required:
            raise ValueError(f"no face of the test set wears only {kind!r}: draw more faces or raise occluder_prob")
    if not faces:
        raise ValueError(f"no face of the test set wears only one of {list(kinds)}: draw more faces")
    return faces


def ratio_curve(checkpoints: Iterable[str | Path], test_set: Mapping[str, torch.Tensor]) -> list[dict]:
    """The occluder/skin ratio (with its standard error) and the output's occluder L1 of each
    checkpoint of a training run, by the iterations it was trained for: how the masks learn to
    choose as training goes on."""
    rows = []
    for path in checkpoints:
        module = load(path)
        stats = affb_statistics(module, test_set)
        rows.append({"iterations": int(module.iterations),
                     "ratio": {str(r): round(v, 4) for r, v in stats.ratio.items()},
                     "ratio_se": {str(r): round(v, 4) for r, v in stats.ratio_se().items()},
                     "occluder_l1_output": round(stats.occluder_l1["output"], 4)})
    if not rows:
        raise ValueError("no checkpoints to measure")
    return sorted(rows, key=lambda row: row["iterations"])


@torch.no_grad()
def i3d_quality(module, test_set: Mapping[str, torch.Tensor], batch_size: int = 64) -> dict[str, float]:
    """How good a model's I_3d is on synthetic faces: the vertex error of its coefficients against
    the truth (unposed, :func:`~sgpn.evaluation.metrics.vertex_error`), and its PSNR against the
    HQ face on skin pixels (the rendered face where no occluder covers it), averaged over images."""
    errors, psnrs = [], []
    for start in range(0, len(test_set["lq"]), batch_size):
        restored = module.restore(test_set["lq"][start:start + batch_size],
                                  true_coefficients(module, test_set, start, batch_size))
        errors.append(vertex_error(module.shape_prior.face_model, restored.coeffs,
                                   test_set["coeffs"][start:start + batch_size]))
        skin = (test_set["face_mask"][start:start + batch_size].float()
                * (1 - test_set["occluder_mask"][start:start + batch_size].float()))
        squared = ((restored.i3d - test_set["hq"][start:start + batch_size]) ** 2 * skin).flatten(1).sum(1)
        psnrs.append(-10 * torch.log10(squared / (3 * skin.flatten(1).sum(1)).clamp(min=1)))
    return {"i3d_vertex_error": torch.cat(errors).mean().item(), "i3d_psnr_skin": torch.cat(psnrs).mean().item()}


def ladder_rungs(test_set: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    """The prior ladder's three kit models (:data:`~sgpn.evaluation.kit_models.LADDER`) on one
    test set: iterations trained, the occluder/skin ratio and its standard error per resolution,
    the L1 to HQ on occluder pixels of the output and of I_3d, and I_3d's quality
    (:func:`i3d_quality`)."""
    rungs = {}
    for name, file in LADDER.items():
        module = load(KIT_CHECKPOINTS / file)
        stats = affb_statistics(module, test_set)
        rungs[name] = {"iterations": int(module.iterations), "ratio": {str(r): round(v, 4) for r, v in stats.ratio.items()},
                       "ratio_se": {str(r): round(v, 4) for r, v in stats.ratio_se().items()},
                       **{f"occluder_l1_{k}": round(v, 4) for k, v in stats.occluder_l1.items()},
                       **{k: round(v, 4) for k, v in i3d_quality(module, test_set).items()}}
    return rungs


#: Hand-set AFFB masks for :func:`mask_interventions`: each a function of the learned mask
#: ``(B, C, r, r)`` and the occluder cells at its resolution ``(B, 1, r, r)`` (bool).
MASK_INTERVENTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "learned": lambda mask, occluder: mask,
    "M = 1 on occluders": lambda mask, occluder: torch.where(occluder, 1.0, mask),
    "M = 0 on occluders": lambda mask, occluder: torch.where(occluder, 0.0, mask),
    "M = 0.5 everywhere": lambda mask, occluder: torch.full_like(mask, 0.5),
    "M = 1 everywhere (F_lq only)": lambda mask, occluder: torch.ones_like(mask),
    "M = 0 everywhere (F_3d only)": lambda mask, occluder: torch.zeros_like(mask),
}


@torch.no_grad()
def mask_interventions(module, test_set: Mapping[str, torch.Tensor], batch_size: int = 64,
                       resolutions: Iterable[int] | None = None,
                       settings: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """What AFFB's masks do, found by setting them by hand (:data:`MASK_INTERVENTIONS`) in every
    block: the mean L1 to the HQ face over occluder pixels (``occluder_l1``) and over the whole
    image (``l1``), each setting on the same faces. A channel-mean mask near 0.5 can hide masks
    that choose per channel; these numbers tell the two apart. Occluder cells as in
    :func:`affb_statistics` (more than half covered). With ``resolutions``, only the blocks at
    those resolutions are set (the others keep their learned masks): what choosing would be
    worth at one resolution. ``settings`` picks some of :data:`MASK_INTERVENTIONS` by name."""
    if module.generator.config.fusion != "affb":
        raise ValueError(f"mask interventions need a model with AFFB; this one has fusion={module.generator.config.fusion!r}")
    cover_all = test_set["occluder_mask"].float()
    if not cover_all.any():
        raise ValueError("the test set has no occluder pixels: draw it with occluder_prob > 0")
    resolutions = None if resolutions is None else set(resolutions)
    unknown = set(settings or ()) - set(MASK_INTERVENTIONS)
    if unknown:
        raise ValueError(f"unknown mask settings {sorted(unknown)}; choose from {list(MASK_INTERVENTIONS)}")
    results = {}
    for name in settings or MASK_INTERVENTIONS:
        setting = MASK_INTERVENTIONS[name]
        occluder_error = image_error = 0.0
        for start in range(0, len(test_set["lq"]), batch_size):
            cover = cover_all[start:start + batch_size]

            def override(mask, cover=cover):
                if resolutions is not None and mask.shape[-1] not in resolutions:
                    return mask
                return setting(mask, F.adaptive_avg_pool2d(cover, mask.shape[-1]) > 0.5)

            with overridden_masks(module.generator, override):
                output = module.restore(test_set["lq"][start:start + batch_size],
                                        true_coefficients(module, test_set, start, batch_size)).output
            error = (output - test_set["hq"][start:start + batch_size]).abs()
            occluder_error += (error * cover).sum().item()
            image_error += error.sum().item()
        results[name] = {"occluder_l1": occluder_error / (3 * cover_all.sum().item()),
                         "l1": image_error / test_set["hq"].numel()}
    return results
