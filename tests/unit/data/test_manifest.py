"""The CSV manifest: columns, slice labels from label volumes (min_lesion_px, margin, constant
slices), label volumes in another voxel order, and one-line errors naming file and line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from iqeclip.data.manifest import _slice_labels, has_pixel_masks, read_manifest
from iqeclip.data.readers import DEFAULT_READING, Reading, mask_input, model_input
from iqeclip.errors import UserError

SHAPE = (8, 8, 6)
AFFINE = np.diag([0.9, 0.8, 2.5, 1.0])


def test_slice_labels_by_hand():
    # slices 2 and 3 hold lesion pixels (4 and 1); min 3 px, margin 1
    got = _slice_labels(np.array([0, 0, 4, 1, 0, 0, 0]), min_lesion_px=3, margin=1)
    assert got == {0: 0, 1: None, 2: 1, 3: None, 4: None, 5: 0, 6: 0}
    assert _slice_labels(np.array([0, 2, 0]), 1, 0) == {0: 0, 1: 1, 2: 0}
    assert _slice_labels(np.zeros(3, int), 1, 5) == {0: 0, 1: 0, 2: 0}


def brats_case(nib: Any, folder: Path, name: str, lesion: bool = True) -> tuple[Path, Path]:
    """A small flair + seg pair: the image stored RAS, the labels stored LPS (same space).

    In RAS+ voxel order, slice 2 along axis 2 has 4 lesion pixels, slice 3 one pixel, and slice 5
    of the image is constant (background only).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    data = rng.uniform(10, 200, SHAPE).astype(np.float32)
    data[:, :, 5] = 0
    labels = np.zeros(SHAPE, np.uint8)
    if lesion:
        labels[2:4, 3:5, 2] = 1
        labels[6, 6, 3] = 2
    image = folder / f"{name}_flair.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), str(image))
    seg = nib.Nifti1Image(labels, AFFINE)
    lps = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(AFFINE), nib.orientations.axcodes2ornt(("L", "P", "S"))
    )
    mask = folder / f"{name}_seg.nii.gz"
    nib.save(seg.as_reoriented(lps), str(mask))
    assert nib.aff2axcodes(nib.load(str(mask)).affine) == ("L", "P", "S")
    return image, mask


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_volume_slices_labelled_by_their_label_volume(tmp_path):
    nib = pytest.importorskip("nibabel")
    image, mask = brats_case(nib, tmp_path / "scans", "p01")
    csv = write_csv(
        tmp_path / "m.csv", "path,label,mask,split", f"scans/{image.name},,scans/{mask.name},train"
    )
    manifest = read_manifest(csv, DEFAULT_READING, min_lesion_px=3, margin=1)
    samples = manifest.split("train")
    assert [(s.index, s.label, s.mask) for s in samples] == [(0, 0, None), (2, 1, mask)]
    assert manifest.left_out == 3 and manifest.constant == 1  # slices 1, 3, 4; slice 5
    assert manifest.split("test") == [] and has_pixel_masks(samples)
    assert [(v.path, v.label) for v in manifest.volumes] == [(image, 1)]

    # the lesion of slice 2 (voxels x 2-3, y 3-4), although the labels are stored LPS, in the
    # radiological view: row 7 - y (anterior at the top), column 7 - x (the right on the left)
    want = np.zeros((8, 8), bool)
    want[3:5, 4:6] = True
    assert torch.equal(mask_input(mask, image, 2, 8), torch.from_numpy(want))
    # the model input is the slice, min-max normalised, in the same view, as predict reads it
    plane = nib.load(str(image)).get_fdata()[:, :, 2].T[::-1, ::-1]
    grey = np.rint((plane - plane.min()) / (plane.max() - plane.min()) * 255).astype(np.uint8)
    assert torch.equal(model_input(image, 2, 8)[0], torch.from_numpy(grey))


def test_rows_without_label_volume_take_the_row_label(tmp_path):
    nib = pytest.importorskip("nibabel")
    image, _ = brats_case(nib, tmp_path, "p02", lesion=False)
    other, _ = brats_case(nib, tmp_path, "p2b", lesion=False)
    png = tmp_path / "a.png"
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(png)
    csv = write_csv(
        tmp_path / "m.csv",
        "split,path,label",  # any column order; no mask column at all
        f"test,{image.name},normal",
        f",{other.name},abnormal",
        "valid,a.png,1",
    )
    manifest = read_manifest(csv, Reading(axis=2))
    test = manifest.split("test")
    assert [s.label for s in test] == [0] * 5 + [1] * 5  # slice 5 is constant in both rows
    assert [s.index for s in test[:5]] == [0, 1, 2, 3, 4]
    valid = manifest.split("valid")
    assert [(s.image.name, s.label, s.index) for s in valid[-1:]] == [("a.png", 1, None)]
    assert not has_pixel_masks(valid)
    one = write_csv(tmp_path / "one.csv", "path,label,slice", f"{image.name},normal,3")
    assert [s.index for s in read_manifest(one, DEFAULT_READING).split("test")] == [3]
    assert read_manifest(one, DEFAULT_READING).volumes == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["path,mask", "a.png,"], "must name the columns path and label"),
        (["path,label", "a.png,maybe"], "line 2: label 'maybe' is not normal, abnormal, 0 or 1"),
        (["path,label,split", "a.png,0,training"], "line 2: split 'training' is not one of"),
        (["path,label", "a.png,0", "gone.png,1"], "line 3: "),
        (["path,label", "a.png,"], "line 2: "),
        (["path,label,slice", "a.png,0,x"], "slice 'x' is not a number"),
        (["path,label,slice", "a.png,0,²"], "line 2: slice '²' is not a number"),  # isdigit()
        (["path,label,slice", "a.png,0,٣"], "line 2: slice '٣' is not a number"),  # int() 3
    ],
)
def test_errors_name_file_and_line(tmp_path, rows, message):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    csv = write_csv(tmp_path / "m.csv", *rows)
    with pytest.raises(UserError, match=r"m\.csv") as info:
        read_manifest(csv, DEFAULT_READING)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_rows_skipped_and_counted(tmp_path):
    nib = pytest.importorskip("nibabel")
    image, mask = brats_case(nib, tmp_path, "p03")
    wrong = tmp_path / "wrong_seg.nii.gz"
    far = AFFINE.copy()
    far[:3, 3] = 1000.0  # a metre away: it labels no voxel of the image
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 5), np.uint8), far), str(wrong))
    shifted = tmp_path / "shifted_seg.nii.gz"
    moved = AFFINE.copy()
    moved[0, 3] = 5.0
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), moved), str(shifted))
    for copy in ("p03_w_flair.nii.gz", "p03_s_flair.nii.gz"):  # one row per image
        shutil.copy(image, tmp_path / copy)
    csv = write_csv(
        tmp_path / "m.csv",
        "path,label,mask",
        f"{image.name},,{mask.name}",
        "missing.nii.gz,1,",
        f"p03_w_flair.nii.gz,,{wrong.name}",
        f"p03_s_flair.nii.gz,,{shifted.name}",
    )
    with pytest.raises(UserError, match=r"line 3: .*missing.nii.gz: no such file"):
        read_manifest(csv, DEFAULT_READING)
    manifest = read_manifest(csv, DEFAULT_READING, policy="skip")
    assert len(manifest.split("train")) == 10  # the good and the shifted (resampled) rows
    reasons = {s.path.name: s.reason for s in manifest.skipped}
    assert reasons["missing.nii.gz"] == "no such file or folder"
    assert "does not overlap" in reasons["wrong_seg.nii.gz"]
    assert "shifted_seg.nii.gz" not in reasons  # another grid: resampled onto the image's
    with pytest.raises(UserError, match=r"^min_lesion_px must be at least 1"):
        read_manifest(csv, DEFAULT_READING, min_lesion_px=0)
    with pytest.raises(UserError, match=r"^margin must be at least 0"):
        read_manifest(csv, DEFAULT_READING, margin=-1)


def test_multipage_tiff_rows_give_one_sample_per_page(tmp_path):
    ramp = np.arange(64, dtype=np.uint8).reshape(8, 8)
    pages = [Image.fromarray(ramp * k) for k in range(1, 4)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    csv = write_csv(tmp_path / "m.csv", "path,label", "stack.tif,normal")
    samples = read_manifest(csv, DEFAULT_READING).split("test")
    assert [s.index for s in samples] == [0, 1, 2]
    assert torch.equal(model_input(tmp_path / "stack.tif", 2, 8)[0], torch.from_numpy(ramp * 3))


def test_csv_problems_name_the_real_line(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    csv = write_csv(tmp_path / "m.csv", "path,label,note", 'a.png,0,"two\nlines"', "a.png,maybe,")
    with pytest.raises(UserError, match="line 4: label 'maybe'"):
        read_manifest(csv, DEFAULT_READING)
    big = write_csv(tmp_path / "big.csv", "path,label", "a.png," + "x" * 200_000)
    with pytest.raises(UserError, match=r"big\.csv line 2: field larger than field limit"):
        read_manifest(big, DEFAULT_READING)


def _pictures(folder: Path, *names: str) -> None:
    for name in names:
        Image.fromarray(np.full((8, 8), 60, np.uint8)).save(folder / name)


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_every_row_twice_is_refused_whatever_on_bad_input(tmp_path, policy):
    _pictures(tmp_path, "a.png", "b.png")
    twice = write_csv(
        tmp_path / "m.csv", "path,label", "a.png,normal", "b.png,abnormal", "a.png,0", "b.png,1"
    )
    with pytest.raises(UserError) as info:  # not 4 samples out of 2 images
        read_manifest(twice, DEFAULT_READING, policy=policy)
    assert str(info.value) == f"manifest {twice} line 4: a.png duplicates line 2"
    # refused before any input is read: a missing file twice is not skipped
    gone = write_csv(tmp_path / "g.csv", "path,label", "a.png,0", "gone.png,1", "gone.png,1")
    with pytest.raises(
        UserError, match=r"^manifest \S*g\.csv line 4: gone\.png duplicates line 3$"
    ):
        read_manifest(gone, DEFAULT_READING, policy=policy)


def test_one_file_under_two_names_is_one_file(tmp_path):
    _pictures(tmp_path, "a.png")
    (tmp_path / "scans").mkdir()
    os.symlink(tmp_path / "a.png", tmp_path / "scans" / "link.png")
    for written, shown in [
        ("./a.png", "./a.png duplicates line 2 (a.png)"),
        ("scans/../a.png", "scans/../a.png duplicates line 2 (a.png)"),
        ("scans/link.png", "scans/link.png duplicates line 2 (a.png)"),
    ]:
        csv = write_csv(tmp_path / "m.csv", "path,label,split", "a.png,0,", f"{written},0,test")
        with pytest.raises(UserError) as info:
            read_manifest(csv, DEFAULT_READING)
        assert str(info.value) == f"manifest {csv} line 3: {shown}"
    # a symbolic-link loop (no resolved path) is still compared, and no traceback
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    loop = write_csv(tmp_path / "l.csv", "path,label", "a.png,0", "loop_a,0", "./loop_a,0")
    with pytest.raises(UserError, match=r"line 4: \./loop_a duplicates line 3 \(loop_a\)$"):
        read_manifest(loop, DEFAULT_READING, policy="skip")


def test_contradicting_rows_are_refused(tmp_path):
    _pictures(tmp_path, "a.png", "m1.png", "m2.png")
    for rows, message in [
        (
            ["a.png,normal,,train", "a.png,abnormal,,test"],
            "a.png contradicts line 2: label 'abnormal' vs 'normal'",
        ),  # even in different splits
        (
            ["a.png,1,m1.png,", "a.png,1,m2.png,"],
            "a.png contradicts line 2: mask 'm2.png' vs 'm1.png'",
        ),
        (
            ["a.png,1,m1.png,", "./a.png,0,,"],
            "./a.png contradicts line 2 (a.png): label '0' vs '1', mask '' vs 'm1.png'",
        ),
    ]:
        csv = write_csv(tmp_path / "m.csv", "path,label,mask,split", *rows)
        with pytest.raises(UserError) as info:
            read_manifest(csv, DEFAULT_READING, policy="skip")
        assert str(info.value) == f"manifest {csv} line 3: {message}"


def test_volume_rows_and_rows_of_its_slices_overlap(tmp_path):
    ramp = np.arange(64, dtype=np.uint8).reshape(8, 8)  # not constant: no slice is left out
    pages = [Image.fromarray(ramp * k) for k in range(1, 4)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    header = "path,label,split,slice"
    whole = write_csv(tmp_path / "m.csv", header, "stack.tif,normal,,", "stack.tif,normal,test,1")
    with pytest.raises(UserError) as info:
        read_manifest(whole, DEFAULT_READING)
    assert (
        str(info.value)
        == f"manifest {whole} line 3: stack.tif slice 1 duplicates line 2 (stack.tif)"
    )
    same = write_csv(tmp_path / "s.csv", header, "stack.tif,1,test,2", "stack.tif,1,test,2")
    with pytest.raises(UserError, match=r"line 3: stack\.tif slice 2 duplicates line 2$"):
        read_manifest(same, DEFAULT_READING)
    last = write_csv(tmp_path / "l.csv", header, "stack.tif,1,,2", "stack.tif,0,,")
    with pytest.raises(
        UserError,
        match=r"line 3: stack\.tif contradicts line 2 \(stack\.tif slice 2\): label '0' vs '1'$",
    ):
        read_manifest(last, DEFAULT_READING)
    # a 2-D image holds one slice, 0
    _pictures(tmp_path, "a.png")
    flat = write_csv(tmp_path / "a.csv", header, "a.png,0,train,0", "a.png,0,,")
    with pytest.raises(UserError, match=r"line 3: a\.png duplicates line 2 \(a\.png slice 0\)$"):
        read_manifest(flat, DEFAULT_READING)
    other = write_csv(tmp_path / "o.csv", header, "a.png,0,train,0", "a.png,0,train,1")
    with pytest.raises(
        UserError, match=r"line 3: \S*a\.png: has no slice 1 \(it is one 2-D image\)"
    ):
        read_manifest(other, DEFAULT_READING)
    assert [
        s.index for s in read_manifest(other, DEFAULT_READING, policy="skip").split("train")
    ] == [None]
    # other slices of one volume, and one sample in rows of different splits, are allowed
    fine = write_csv(
        tmp_path / "f.csv",
        header,
        "stack.tif,0,,0",
        "stack.tif,1,,1",
        "stack.tif,1,train,2",
        "stack.tif,1,test,2",
    )
    manifest = read_manifest(fine, DEFAULT_READING)
    assert [(s.index, s.label) for s in manifest.split("train")] == [(0, 0), (1, 1), (2, 1)]
    assert [(s.index, s.label) for s in manifest.split("test")] == [(0, 0), (1, 1), (2, 1)]
    assert [(s.index, s.label) for s in manifest.split("valid")] == [(0, 0), (1, 1)]


def test_a_column_named_twice_is_refused(tmp_path):
    _pictures(tmp_path, "a.png")
    for header in ["path,label,label", "path, label,mask,label ", "path,label,mask,path,mask"]:
        csv = write_csv(tmp_path / "m.csv", header, "a.png,1,0" + ",a.png" * header.count("mask"))
        with pytest.raises(UserError) as info:
            read_manifest(csv, DEFAULT_READING, policy="skip")
        twice = "'mask' and 'path'" if header.count("mask") == 2 else "'label'"
        assert str(info.value) == (
            f"manifest {csv} line 1: the header names {twice} more than once (a column has "
            "one name)"
        )
    # unnamed columns (trailing commas of a spreadsheet export) are not names
    blank = write_csv(tmp_path / "b.csv", "path,label,,", "a.png,1,,")
    assert [s.label for s in read_manifest(blank, DEFAULT_READING).split("test")] == [1]


def test_only_csv_records_split_lines(tmp_path):
    name = "a\u2028b\x0cc.png"  # a line separator and a form feed: str.splitlines splits there
    _pictures(tmp_path, name)
    csv = tmp_path / "m.csv"
    csv.write_text(f'path,label\r\n"{name}",abnormal\r\n', encoding="utf-8")
    (sample,) = read_manifest(csv, DEFAULT_READING).split("test")
    assert sample.image == tmp_path / name and sample.label == 1
    csv.write_text(f'path,label\n"{name}",abnormal\n"{name}",1\n', encoding="utf-8")
    with pytest.raises(UserError) as info:
        read_manifest(csv, DEFAULT_READING)
    # one record per row (UserError writes the path's separators as spaces: one line)
    assert str(info.value) == f"manifest {csv} line 3: a b c.png duplicates line 2"
    csv.write_text(f'path,label\n"{name}",abnormal\nb.png,maybe\n', encoding="utf-8")
    with pytest.raises(UserError, match="m\\.csv line 3: label 'maybe' is not"):
        read_manifest(csv, DEFAULT_READING)
