"""The synthetic retouch (sgpn.retouch.synthetic_retouch) and the retouched/raw pair datasets (sgpn.retouch.pairs)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sgpn.data.procedural import FaceFrame
from sgpn.data.synthetic import SyntheticFaces
from sgpn.retouch.pairs import FolderPairs, RetouchedFaces
from sgpn.retouch.synthetic_retouch import PARTS, Retouch, describe, face_regions

OFF = {part: 0.0 for part in PARTS}


@pytest.fixture(scope="module")
def faces():
    dataset = SyntheticFaces(size=64, length=4, seed=11, occluder_prob=0.0)
    items = [dataset[i] for i in range(4)]
    return {key: torch.stack([item[key] for item in items]) for key in ("hq", "landmarks", "face_mask", "occluder_mask")}


def only(part: str, strength: float, **extra) -> list[dict]:
    return [{**OFF, part: strength, **extra}] * 4


def retouch(faces, params, image=None):
    image = faces["hq"] if image is None else image
    return Retouch.apply(image, faces["landmarks"], faces["face_mask"], params, faces["occluder_mask"]).image


def test_no_strength_leaves_the_face_alone(faces):
    torch.testing.assert_close(retouch(faces, [OFF] * 4), faces["hq"], atol=1e-5, rtol=0)


def test_a_seed_gives_the_same_retouch_and_its_parameters(faces):
    args = (faces["hq"], faces["landmarks"], faces["face_mask"], faces["occluder_mask"])
    first, again = Retouch()(*args, generator=[1, 2, 3, 4]), Retouch()(*args, generator=[1, 2, 3, 4])
    assert torch.equal(first.image, again.image) and first.params == again.params
    other = Retouch()(*args, generator=[5, 6, 7, 8])
    assert other.params != first.params
    for params in first.params:
        for part, (low, high) in Retouch().ranges.items():
            assert low <= params[part] <= high
    off = Retouch(smooth=None, lips=None)(*args, generator=1).params[0]
    assert off["smooth"] == 0 and off["lips"] == 0 and off["slim"] > 0


def test_smoothing_takes_the_skin_detail_and_nothing_off_the_face(faces):
    out = retouch(faces, only("smooth", 1.0))
    near_face = torch.nn.functional.max_pool2d(faces["face_mask"], 5, 1, 2)  # feathered by a pixel or two
    outside = near_face.expand_as(out) == 0
    assert torch.equal(out[outside], faces["hq"][outside])

    skin = torch.stack([face_regions(FaceFrame(points, 64), image, mask, occluder).skin
                        for points, image, mask, occluder in zip(faces["landmarks"], faces["hq"],
                                                                 faces["face_mask"], faces["occluder_mask"])])

    def detail(image):  # high-frequency energy on the skin
        blurred = torch.nn.functional.avg_pool2d(image, 3, 1, 1)
        return ((image - blurred).abs() * (skin > 0.9)).sum()

    assert detail(out) < 0.5 * detail(faces["hq"])


def test_brightening_lightens_the_skin_only(faces):
    out = retouch(faces, only("brighten", 0.8))
    face = faces["face_mask"].expand_as(out) > 0
    assert out[face].mean() > faces["hq"][face].mean() + 0.05
    near_face = torch.nn.functional.max_pool2d(faces["face_mask"], 5, 1, 2).expand_as(out) > 0
    assert torch.equal(out[~near_face], faces["hq"][~near_face])


def test_lipstick_lands_on_the_mouth(faces):
    out = retouch(faces, only("lips", 1.0, lipstick="crimson"))
    changed = (out - faces["hq"]).abs().sum(1) > 0.05
    rows, cols = changed.nonzero()[:, 1].float(), changed.nonzero()[:, 2].float()
    mouth = faces["landmarks"][:, 48:68].mean(1)
    assert changed.any(dim=(1, 2)).all()
    assert ((rows - mouth[:, 1].mean()).abs() < 8).float().mean() > 0.9
    redness = (out[:, 0] - out[:, 1:].mean(1))[changed].mean()
    assert redness > (faces["hq"][:, 0] - faces["hq"][:, 1:].mean(1))[changed].mean() + 0.1


def test_slimming_narrows_the_cheeks_and_the_jaw_and_leaves_the_corners(faces):
    mask = faces["face_mask"].expand(-1, 3, -1, -1).contiguous()
    points = faces["landmarks"]
    rows = {"slim": points[:, 30, 1], "jaw": (points[:, 48:68, 1].mean(1) + points[:, 8, 1]) / 2}
    for part, row in rows.items():  # the face's width across the cheeks, and across the jaw
        out = retouch(faces, only(part, 0.12), image=mask)
        for i, y in enumerate(row.round().long()):
            assert out[i, 0, y].sum() < 0.94 * mask[i, 0, y].sum()
            above_eyes = slice(0, int(points[i, 17:27, 1].min()) - 2)  # forehead, hair and corners stay
            torch.testing.assert_close(out[i, :, above_eyes], mask[i, :, above_eyes], atol=1e-4, rtol=0)


def test_eye_enlargement_magnifies_the_eyes(faces):
    eyes = torch.zeros_like(faces["hq"])
    for i, points in enumerate(faces["landmarks"]):
        for eye in (points[36:42], points[42:48]):
            x, y = eye.mean(0).round().long().tolist()
            eyes[i, :, y - 1:y + 2, x - 1:x + 2] = 1
    out = retouch(faces, only("eyes", 0.2), image=eyes)
    assert out.sum() > 1.3 * eyes.sum()


def test_bad_inputs_are_named(faces):
    hq, landmarks, mask = faces["hq"], faces["landmarks"], faces["face_mask"]
    with pytest.raises(ValueError, match="unknown retouch part"):
        Retouch(blush=(0, 1))
    with pytest.raises(ValueError, match="slim"):
        Retouch(slim=(0.0, 0.5))
    with pytest.raises(ValueError, match="landmarks must be"):
        Retouch()(hq, landmarks[:, :5], mask)
    with pytest.raises(ValueError, match="NaN"):
        Retouch()(hq, landmarks * float("nan"), mask)
    with pytest.raises(ValueError, match="square"):
        Retouch()(hq[..., :60], landmarks, mask[..., :60])
    with pytest.raises(ValueError, match="face_mask"):
        Retouch()(hq, landmarks, mask[:, :, :32])
    with pytest.raises(ValueError, match="parameter sets"):
        Retouch.apply(hq, landmarks, mask, [OFF])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Retouch()(hq * 2, landmarks, mask)


def test_caption_names_every_part():
    caption = describe({"smooth": 0.8, "brighten": 0.3, "lips": 0.5, "lipstick": "coral", "slim": 0.05,
                        "jaw": 0.03, "eyes": 0.1})
    assert caption == "smooth 0.80 · brighten 0.30 · lips 0.50 coral · slim 5% · jaw 3% · eyes ×1.11"
    assert describe(OFF) == "untouched"


def test_retouched_faces_are_fixed_per_index():
    pairs = RetouchedFaces(SyntheticFaces(size=32, length=3, seed=2), seed=7)
    first, again = pairs[1], pairs[1]
    assert torch.equal(first["retouched"], again["retouched"]) and first["params"] == again["params"]
    assert first["raw"].shape == first["retouched"].shape == (3, 32, 32)
    assert not torch.equal(first["retouched"], first["raw"])
    assert pairs[0]["params"] != first["params"]
    assert RetouchedFaces(SyntheticFaces(size=32, length=3, seed=2), seed=8)[1]["params"] != first["params"]


def _write(path, colour, size=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def test_folder_pairs_match_by_name_in_deepfrr_layout(tmp_path):
    for name, shade in (("a.png", 40), ("sub/b.png", 200)):
        _write(tmp_path / "deimage" / "face" / name, (shade + 30, shade, shade))
        _write(tmp_path / "rawimage" / name, (shade, shade, shade))
    pairs = FolderPairs.deepfrr(tmp_path, size=16)
    assert len(pairs) == 2
    item = pairs[1]
    assert item["retouched"].shape == item["raw"].shape == (3, 16, 16)
    assert item["path"].endswith("b.png")
    assert item["raw"].mean() == pytest.approx(200 / 255, abs=1e-3)
    assert item["retouched"][0].mean() > item["raw"][0].mean()


def test_folder_pairs_refuse_an_image_without_its_partner(tmp_path):
    _write(tmp_path / "retouched" / "a.png", (10, 10, 10))
    _write(tmp_path / "retouched" / "lonely.png", (10, 10, 10))
    _write(tmp_path / "raw" / "a.png", (10, 10, 10))
    with pytest.raises(ValueError, match="no raw partner.*lonely.png"):
        FolderPairs(tmp_path / "retouched", tmp_path / "raw")
    with pytest.raises(FileNotFoundError):
        FolderPairs(tmp_path / "retouched", tmp_path / "missing")


def test_each_part_alone_and_all_together():
    from sgpn.retouch.synthetic_retouch import each_part

    face = SyntheticFaces(64, 1, seed=2)[0]
    params = {"smooth": 0.8, "brighten": 0.3, "lips": 0.0, "slim": 0.06, "jaw": 0.0, "eyes": 0.1, "lipstick": "coral"}
    parts = each_part(face["hq"][None], face["landmarks"][None], face["face_mask"][None], params)
    assert list(parts) == ["smooth", "brighten", "slim", "eyes", "all"]  # parts at 0 are left out
    alone = Retouch.apply(face["hq"][None], face["landmarks"][None], face["face_mask"][None], [{"slim": 0.06}]).image
    torch.testing.assert_close(parts["slim"], alone)
    assert all(not torch.equal(image, face["hq"][None]) for image in parts.values())


def test_retouch_sliders_redraw_headless():
    from sgpn.app.widgets import RetouchSliders

    face = SyntheticFaces(64, 1, seed=2)[0]
    sliders = RetouchSliders(face)
    first, png = sliders.retouched.clone(), sliders.image.value
    sliders.controls["eyes"].value = 0.2
    assert not torch.equal(sliders.retouched, first) and sliders.image.value != png
    assert "eyes ×1.25" in sliders.caption.value
    for name in PARTS:
        sliders.controls[name].value = 0.0
    torch.testing.assert_close(sliders.retouched, face["hq"])
    assert sliders.caption.value.endswith("untouched")
