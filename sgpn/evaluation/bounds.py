"""How much any restorer could gain on the blind test set: the LQ input against reconstructions
handed one piece of the truth."""

from __future__ import annotations

from typing import Mapping

import torch

from sgpn.evaluation.scoring import score
from sgpn.evaluation.tables import Evaluation, Row
from sgpn.evaluation.test_sets import TASK_OPTIONS, degraded_test_set
from sgpn.face3d.face_model import load_face_model
from sgpn.face3d.renderer import Renderer

#: The reconstructions :func:`restoration_bounds` scores, by the test-set key holding each.
BOUND_METHODS = {
    "LQ input": "lq",
    "ideal denoiser: LQ without noise and JPEG": "lq_noise_free",
    "ideal shape prior: exact 3DMM render on the visible face": "lq_with_render",
    "ideal face restorer: true HQ on the visible face": "lq_with_face",
}


@torch.no_grad()
def bound_reconstructions(faces, degradation_kwargs: dict | None = None,
                          batch_size: int = 64) -> dict[str, torch.Tensor]:
    """The blind test set (``degraded_test_set``) plus the reconstructions that cheat, under the
    keys of :data:`BOUND_METHODS`, and ``visible``: the rendered face not under an occluder.

    Each keeps the LQ image and is handed one piece of the truth: the same blur and
    downsampling without the noise and JPEG (what a perfect denoiser would recover), the exact
    3DMM render of the true coefficients pasted on the visible face (a perfect shape prior
    used as is: it lacks the skin detail, eyes and lighting nuances of the photo-like HQ), or
    the true HQ pixels on the visible face (face restored perfectly, hair, background and
    occluders left as degraded).
    """
    options = TASK_OPTIONS["blind"] if degradation_kwargs is None else degradation_kwargs
    test_set = degraded_test_set(faces, "blind", options, batch_size)
    noise_free = degraded_test_set(faces, "blind", {**options, "noise": None, "jpeg_quality": None}, batch_size)
    model = load_face_model()
    renderer = Renderer(test_set["hq"].shape[-1], backend="fast")
    render = torch.cat([renderer(model(c, renderer.image_size), model.faces).image
                        for c in test_set["coeffs"].split(batch_size)]).clamp(0, 1)
    visible = test_set["face_mask"] * (1 - test_set["occluder_mask"])
    lq = test_set["lq"]
    test_set.update(lq_noise_free=noise_free["lq"], lq_with_render=torch.lerp(lq, render, visible),
                    lq_with_face=torch.lerp(lq, test_set["hq"], visible), visible=visible)
    return test_set


def restoration_bounds(reconstructions: Mapping[str, torch.Tensor], batch_size: int = 64) -> Evaluation:
    """How much a restorer could gain on the blind test set: PSNR and SSIM of the LQ input and
    of the cheating reconstructions of :func:`bound_reconstructions`."""
    evaluation = Evaluation(metrics=("psnr", "ssim"))
    for name, key in BOUND_METHODS.items():
        results, count = score(lambda batch, key=key: (batch[key], None), reconstructions,
                               lpips=False, fid=False, batch_size=batch_size)
        evaluation.rows.append(Row("blind", name, results, count))
    evaluation.notes.append(f"visible face: {reconstructions['visible'].mean().item():.1%} of the pixels (rendered "
                            f"face not covered by an occluder)")
    return evaluation
