"""Face retouching reversal, measured: the retouched input, the plain U-Net, FMAR alone
(upsampled) and FMAR + HFDG on held-out pairs, with FRRffusion's pixel metrics and the kit's
identity-shape error.

* PSNR, SSIM, FID and KID against the raw faces (:class:`~sgpn.evaluation.metrics.MetricSuite`, the
  standard Inception of :mod:`sgpn.evaluation.inception`).
* ``id_error``: the kit's teacher regresses the identity coefficients of the output and of the
  raw face; the error is the mean vertex distance between the two identity-only meshes
  (expression, pose and colour left out), in the face model's units. Slimming and jaw
  narrowing move it; smoothing and colour barely do.
* ``vgg``: FRRffusion's VGG similarity (:class:`~sgpn.evaluation.perceptual.VGGSimilarity`), when
  torchvision's VGG-16 file is local; otherwise the row says which file to provide.
* ``clip``: FRRffusion's CLIP similarity needs OpenAI's CLIP image encoder, which neither the
  kit's packages nor its offline assets hold: the rows name what it would take.

The held-out pairs are :class:`~sgpn.retouch.pairs.RetouchDataModule`'s fixed test split: the
synthetic faces retouched with seeded strengths, or a folder of pairs in deepFRR's layout.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping

import torch

from sgpn.checkpoints import load
from sgpn.evaluation.inception import StandardInception
from sgpn.evaluation.metrics import MetricResult, MetricSuite, mean_over_images, psnr_per_image, vertex_error
from sgpn.evaluation.perceptual import WeightsUnavailable, build_vgg_similarity
from sgpn.evaluation.tables import Evaluation, Row
from sgpn.face3d import coefficients
from sgpn.images import to_image, to_network
from sgpn.nets.fmar import resize
from sgpn.nets.frr_stage import FRRStage
from sgpn.paths import KIT_CHECKPOINTS
from sgpn.retouch.pairs import RetouchDataModule
from sgpn.retouch.pipeline import FRRffusion

#: The kit's FRR checkpoints (``make frr``), by stage.
FRR_CHECKPOINTS = {"fmar": "frr_fmar_tiny.ckpt", "hfdg": "frr_hfdg_tiny.ckpt", "unet": "frr_unet_tiny.ckpt"}
#: The rows of the results table: bench key -> method name.
FRR_ROWS = {"retouched": "retouched input", "unet": "U-Net (L1)", "fmar": "FMAR (upsampled)",
            "fmar_hfdg": "FMAR + HFDG"}
#: The table's task name and metric columns.
FRR_TASK = "retouch"
FRR_METRICS = ("psnr", "ssim", "fid", "kid", "id_error", "vgg", "clip")
CLIP_UNAVAILABLE = ("unavailable (needs OpenAI's CLIP ViT-B/32 image encoder, e.g. the "
                    "openai/clip-vit-base-patch32 weights and the transformers package; the kit ships neither)")


def load_kit_frr(kit_dir: str | os.PathLike = KIT_CHECKPOINTS) -> dict[str, FRRStage]:
    """The kit's three stages from ``kit_dir``: ``{"fmar", "hfdg", "unet"}``."""
    return {stage: load(Path(kit_dir) / name) for stage, name in FRR_CHECKPOINTS.items()}


def frr_test_set(num_images: int = 256, size: int = 64, source: str = "synthetic") -> dict[str, torch.Tensor]:
    """The first ``num_images`` held-out pairs: ``{"lq": retouched, "hq": raw}``, ``(N, 3, S, S)``."""
    data = RetouchDataModule(source=source, size=size, test_length=num_images)
    data.setup("test")
    pairs = [data.datasets["test"][i] for i in range(len(data.datasets["test"]))]
    return {"lq": torch.stack([p["retouched"] for p in pairs]), "hq": torch.stack([p["raw"] for p in pairs])}


@torch.no_grad()
def frr_outputs(stages: Mapping[str, FRRStage], retouched: torch.Tensor, steps: int = 20, batch_size: int = 64,
                seed: int = 0) -> tuple[dict[str, torch.Tensor], float]:
    """Every row's faces (:data:`FRR_ROWS`) for ``retouched`` in [0, 1], and FMAR + HFDG's
    seconds per image (sampling ``steps`` DDIM steps, then the detail stage). FMAR alone is the
    same sample as the one HFDG lifts; the sampling noise is seeded."""
    model = FRRffusion(stages["fmar"], stages["hfdg"], steps)
    generator = torch.Generator().manual_seed(seed)
    outputs: dict[str, list[torch.Tensor]] = {key: [] for key in FRR_ROWS}
    seconds = 0.0
    for start in range(0, len(retouched), batch_size):
        batch = retouched[start:start + batch_size]
        outputs["retouched"].append(batch)
        outputs["unet"].append(to_image(stages["unet"].net(to_network(batch))))
        began = time.perf_counter()
        reversed_ = model.reverse(batch, generator)
        seconds += time.perf_counter() - began
        outputs["fmar"].append(reversed_.coarse_up)
        outputs["fmar_hfdg"].append(reversed_.output)
    return {key: torch.cat(faces).clamp(0, 1) for key, faces in outputs.items()}, seconds / len(retouched)


@torch.no_grad()
def frr_limits(stages: Mapping[str, FRRStage], pairs: Mapping[str, torch.Tensor], samples: int = 4,
               steps: int = 20, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Where FMAR + HFDG loses PSNR, per image against the raw face: ``(at full size, at
    FMAR's size)``, each ``{row: (N,) PSNR}``, for ``pairs`` (:func:`frr_test_set`).

    At full size: the retouched input; the raw face brought down to FMAR's size and back (no
    coarse stage can do better alone); that plus the retouched face's details above FMAR's size
    (HFDG's starting point, no network), or plus the U-Net's own details above FMAR's size
    (what HFDG's details are up against); HFDG given that raw face, or the U-Net's output brought
    down to FMAR's size (a coarse face as good as the U-Net's own there); FMAR + HFDG with one
    FMAR sample and with the mean of ``samples`` (drawn in turn from one generator, as
    :meth:`FRRffusion.reverse` draws them); and the U-Net. At FMAR's size: the retouched
    input, FMAR's sample, the mean of ``samples``, its guess x̂_0 at the first reverse step (where
    x_t is almost pure noise: the network's mean guess, what a regression would output) and
    the U-Net brought down."""
    pipeline = FRRffusion(stages["fmar"], stages["hfdg"], steps)
    fmar, unet = pipeline.fmar, stages["unet"].net
    retouched, raw = to_network(pairs["lq"]), pairs["hq"]
    size, low = retouched.shape[-1], fmar.size

    def lifted(coarse: torch.Tensor) -> torch.Tensor:
        return pipeline.lift(coarse, retouched).output

    generator = torch.Generator().manual_seed(seed)
    condition = resize(retouched, fmar.condition_size)
    draws = [fmar.sample(condition, steps, generator, keep=1) for _ in range(samples)]
    sample, (first_step, _, guess) = draws[0][0], draws[0][1][0]
    mean = torch.stack([coarse for coarse, _ in draws]).mean(0)
    restored = unet(retouched)
    raw_low, unet_low = resize(to_network(raw), low), resize(restored, low)
    details = retouched - resize(resize(retouched, low), size)
    unet_details = restored - resize(unet_low, size)
    full = {"retouched input": to_image(retouched),
            f"raw face down to {low} px and back": to_image(resize(raw_low, size)),
            "that + the retouched face's details (no network)": to_image(resize(raw_low, size) + details),
            f"that + the U-Net's details above {low} px": to_image(resize(raw_low, size) + unet_details),
            f"HFDG on the raw face at {low} px": lifted(raw_low),
            f"HFDG on the U-Net's face brought down to {low} px": lifted(unet_low),
            "FMAR + HFDG, one FMAR sample": lifted(sample),
            f"FMAR + HFDG, mean of {samples} FMAR samples": lifted(mean),
            "U-Net (L1)": to_image(restored)}
    at_low = {"retouched input": resize(retouched, low), f"FMAR's sample ({steps} DDIM steps)": sample,
              f"mean of {samples} FMAR samples": mean, f"FMAR's first-step guess x̂_0 (t = {first_step})": guess,
              f"U-Net (L1) brought down to {low} px": unet_low}
    return ({name: psnr_per_image(faces.clamp(0, 1), raw) for name, faces in full.items()},
            {name: psnr_per_image(to_image(faces), to_image(raw_low)) for name, faces in at_low.items()})


def where_frr_loses(stages: Mapping[str, FRRStage], pairs: Mapping[str, torch.Tensor], steps: int = 20,
                    seed: int = 0) -> dict[str, dict[str, MetricResult]]:
    """:func:`frr_limits` with one FMAR sample, as FRRffusion draws it, cut to the three
    comparisons that say where FMAR + HFDG loses to the U-Net, each PSNR a mean over the pairs
    with its standard error (differences paired, image by image): HFDG's details against the
    U-Net's, both on the raw face brought down to FMAR's size; the coarse face at FMAR's size;
    and at full size, both stages against HFDG on the U-Net's own coarse face and the U-Net."""
    full, low = frr_limits(stages, pairs, samples=1, steps=steps, seed=seed)
    size, mean = stages["fmar"].net.size, lambda values: mean_over_images([values])
    hfdg, theirs = full[f"HFDG on the raw face at {size} px"], full[f"that + the U-Net's details above {size} px"]
    on_unet, unet = full[f"HFDG on the U-Net's face brought down to {size} px"], full["U-Net (L1)"]
    guess = next(values for name, values in low.items() if name.startswith("FMAR's first-step guess"))
    return {f"details above {size} px on the raw face brought down": {
                "HFDG's": mean(hfdg), "the U-Net's": mean(theirs), "the U-Net's − HFDG's": mean(theirs - hfdg)},
            f"the face at {size} px": {
                "FMAR's sample": mean(low[f"FMAR's sample ({steps} DDIM steps)"]),
                "FMAR's first-step guess": mean(guess),
                "the U-Net's brought down": mean(low[f"U-Net (L1) brought down to {size} px"])},
            f"at {pairs['hq'].shape[-1]} px": {
                "FMAR + HFDG": mean(full["FMAR + HFDG, one FMAR sample"]),
                f"HFDG on the U-Net's {size} px face": mean(on_unet), "the U-Net": mean(unet),
                "the U-Net − HFDG on its face": mean(unet - on_unet)}}


@torch.no_grad()
def identity_error(teacher, output: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """Per image ``(B,)``: the mean vertex distance between the identity-only meshes the
    teacher (a :class:`~sgpn.nets.shape_prior.ShapePrior`) regresses from ``output`` and from
    ``raw`` (both ``(B, 3, S, S)`` in [0, 1])."""
    if output.shape != raw.shape:
        raise ValueError(f"output {tuple(output.shape)} and raw {tuple(raw.shape)} faces differ in shape")
    identities = [coefficients.merge(id=coefficients.split(teacher.regressor(teacher.to_regressor_frame(
        to_network(faces)))).id) for faces in (output, raw)]
    return vertex_error(teacher.face_model, *identities)


def frr_evaluation(outputs: Mapping[str, torch.Tensor], raw: torch.Tensor, teacher, fid: bool = True,
                   vgg_weights: str | os.PathLike | None = None, batch_size: int = 64) -> Evaluation:
    """One row per method of ``outputs`` (keys of :data:`FRR_ROWS`) against the ``raw`` faces."""
    inception = StandardInception() if fid else None
    try:
        vgg, vgg_reason = build_vgg_similarity(vgg_weights), None
    except WeightsUnavailable as missing:
        vgg, vgg_reason = None, str(missing)
    evaluation = Evaluation(metrics=FRR_METRICS)
    for key, faces in outputs.items():
        if faces.shape != raw.shape:
            raise ValueError(f"{FRR_ROWS.get(key, key)}: {tuple(faces.shape)} faces for {tuple(raw.shape)} raw ones")
        suite = MetricSuite(lpips=False, fid=fid, inception=inception, keep_targets=fid)
        id_errors, similarities = [], []
        for start in range(0, len(raw), batch_size):
            out, target = faces[start:start + batch_size], raw[start:start + batch_size]
            suite.update(out, target)
            id_errors.append(identity_error(teacher, out, target))
            if vgg is not None:
                similarities.append(vgg(out, target))
        results = suite.compute()
        results["id_error"] = mean_over_images(id_errors)
        results["vgg"] = mean_over_images(similarities) if vgg is not None else MetricResult(None, vgg_reason)
        results["clip"] = MetricResult(None, CLIP_UNAVAILABLE)
        evaluation.rows.append(Row(FRR_TASK, FRR_ROWS[key], results, len(raw)))
    return evaluation


def kit_frr_evaluation(num_images: int = 256, steps: int = 20, fid: bool = True):
    """The kit's stages (:func:`load_kit_frr`) on the first ``num_images`` held-out synthetic
    pairs, identity errors read by the kit's teacher: ``(evaluation, pairs, outputs,
    seconds per image)`` (what ``sgpn bench frr`` and ``sgpn figures frr`` report)."""
    stages = load_kit_frr()
    pairs = frr_test_set(num_images, stages["fmar"].size)
    outputs, seconds = frr_outputs(stages, pairs["lq"], steps)
    evaluation = frr_evaluation(outputs, pairs["hq"], load(KIT_CHECKPOINTS / "teacher_tiny.ckpt"), fid=fid)
    return evaluation, pairs, outputs, seconds
