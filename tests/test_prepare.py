"""``sgpn prepare``: photos into aligned training faces, split by photo, with a manifest."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_portraits
from PIL import Image

from sgpn.cli import main
from sgpn.data.folder import load_image, read_rgb
from sgpn.photo.alignment import align
from sgpn.photo.prepare import MANIFEST, prepare_faces, split_of

SIZE = 128


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Five portraits (one in a subfolder), one too small to keep its face, one without a face,
    a corrupt JPEG and a text file."""
    folder = tmp_path_factory.mktemp("raw")
    portraits = write_portraits(folder)
    (folder / "trip").mkdir()
    portraits[1].rename(folder / "trip" / "portrait_1.jpg")
    with Image.open(portraits[0]) as photo:
        photo.resize((120, 140)).save(folder / "far_away.jpg")
    Image.new("RGB", (300, 200), (120, 160, 200)).save(folder / "sky.png")
    (folder / "broken.jpg").write_bytes(portraits[0].read_bytes()[:300])
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_prepare_aligns_every_face_like_restore_and_reports_the_rest(raw, tmp_path):
    out = tmp_path / "faces"
    report = prepare_faces(raw, out, size=SIZE, min_face=64, fractions=(0.25, 0.25), progress=False)
    records = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert sorted(r["source"] for r in records) == ["portrait_0.jpg", "portrait_2.jpg", "portrait_3.jpg",
                                                   "portrait_4.jpg", "trip/portrait_1.jpg"]
    assert report.too_small == 1 and report.no_face == ["sky.png"]
    assert [name for name, _ in report.unreadable] == ["broken.jpg"]
    assert report.totals == {s: sum(r["split"] == s for r in records) for s in ("train", "val", "test")}
    for record in records:
        assert record["split"] == split_of(record["source"], (0.25, 0.25))
        assert record["file"].startswith(record["split"] + "/") and record["score"] >= 0.95
        assert len(record["box"]) == 4 and len(record["points_5"]) == 5
        # the crop is the restore path's alignment of the photo at the manifest's points
        expected, _ = align(read_rgb(raw / record["source"]), torch.tensor(record["points_5"], dtype=torch.float64), SIZE)
        crop = load_image(out / record["file"], SIZE)
        assert crop.shape == (3, SIZE, SIZE) and (crop - expected).abs().mean() < 2 / 255
    assert {p.name for p in out.iterdir()} == {"train", "val", "test", MANIFEST}

    # a re-run writes nothing again; a new photo gets its own split and leaves the others alone
    times = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    write_portraits(tmp_path / "more", 1)[0].rename(raw / "new_portrait.jpg")
    again = prepare_faces(raw, out, size=SIZE, min_face=64, fractions=(0.25, 0.25), progress=False)
    assert again.kept == len(records) and [r["source"] for r in again.written] == ["new_portrait.jpg"]
    assert all(p.stat().st_mtime_ns == t for p, t in times.items())
    (raw / "new_portrait.jpg").unlink()


def test_prepare_refuses_to_mix_into_a_folder_of_other_files(raw, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "holiday.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match="holiday.png"):
        prepare_faces(raw, tmp_path / "busy", size=SIZE, progress=False)
    with pytest.raises(ValueError, match="outside the photos' folder"):
        prepare_faces(raw, raw / "out", size=SIZE, progress=False)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        prepare_faces(tmp_path / "nothing", tmp_path / "x", progress=False)


def test_the_prepare_command_prints_its_summary(raw, tmp_path, capsys):
    assert main(["prepare", str(raw), str(tmp_path / "faces"), "--size", str(SIZE), "--val", "0.25",
                 "--test", "0.25"]) == 0
    printed = capsys.readouterr().out
    assert "5 faces written, 0 kept from before; the folder holds 4 train, 0 val, 1 test" in printed
    assert "note: no photo went to val/" in printed
    assert "1 faces too small, 1 photos without a face, 1 unreadable" in printed
