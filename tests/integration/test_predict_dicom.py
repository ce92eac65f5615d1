"""predict on a PACS-style DICOM folder: one volume per series, slice order, provenance columns,
and an undecodable file counted as a skip."""

from __future__ import annotations

import csv

import pytest

from iqeclip.cli.main import main
from iqeclip.inference.listing import unique_stems
from iqeclip.inference.predict import CSV_COLUMNS
from tests.integration.conftest import predict_argv
from tests.unit.data.readers.test_registry import (
    AXIAL_UID,
    OBLIQUE_UID,
    truncated_ct,
    write_two_series,
)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_splits_a_folder_by_series_with_provenance(checkpoint, tmp_path, capsys):
    pydicom = pytest.importorskip("pydicom")
    folder = tmp_path / "export"
    names = write_two_series(pydicom, folder)
    broken = truncated_ct(pydicom, folder / "broken.dcm")
    out = tmp_path / "out"
    argv = [*predict_argv(checkpoint, folder, out=out), "--outputs", "overlay,map,npy"]

    assert main(argv) == 2  # --on_bad_input error: one line naming the file
    assert "broken.dcm" in capsys.readouterr().err

    assert main([*argv, "--on_bad_input", "skip", "--batch_size", "4"]) == 0
    assert "skipped 1 files or inputs, each listed with its reason" in capsys.readouterr().out
    skipped = _rows(out / "skipped_inputs.csv")
    assert [r["path"] for r in skipped] == [str(broken)]

    with open(out / "predictions.csv", newline="") as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    assert CSV_COLUMNS[:7] == (
        "path",
        "slice",
        "slice_mm",
        "score",
        "decision",
        "threshold",
        "rule",
    )
    rows = _rows(out / "predictions.csv")
    assert len(rows) == 6
    by_series = {AXIAL_UID: rows[:3], OBLIQUE_UID: rows[3:]}
    for (uid, group), number in zip(by_series.items(), (2, 5), strict=True):
        stem = f"export_series{number}"
        assert {r["path"] for r in group} == {f"{folder}#{uid}"}
        assert all(r["series_instance_uid"] == uid for r in group)
        assert [r["slice"] for r in group] == ["0", "1", "2"]
        assert [r["source"] for r in group] == [str(folder / n) for n in names[uid]]
        assert [r["sop_instance_uid"] for r in group] == [f"{uid}.{k}" for k in (1, 2, 3)]
        for r in group:
            name = f"{stem}_s{int(r['slice']):03d}"
            expected = [f"{name}_overlay.png", f"{name}_map.png", f"{name}_map.npy"]
            if r["slice"] == "2":  # the last slice's row also lists the series' NIfTI
                expected.append(f"{stem}_anomaly.nii.gz")
            assert r["outputs"].split(";") == expected
            assert all((out / f).is_file() for f in expected)
    volumes = _rows(out / "volumes.csv")
    assert [v["path"] for v in volumes] == [f"{folder}#{AXIAL_UID}", f"{folder}#{OBLIQUE_UID}"]
    assert [v["n_slices"] for v in volumes] == ["3", "3"]


def test_plain_rows_name_their_file_and_stems_stay_distinct(bench, checkpoint, tmp_path):
    image = next((bench / "Brain_AD" / "test" / "Ungood" / "img").iterdir())
    a, b = tmp_path / "a" / image.name, tmp_path / "b" / image.name
    for copy in (a, b):
        copy.parent.mkdir()
        copy.write_bytes(image.read_bytes())
    stems = unique_stems([a, b])
    assert stems == {a: image.stem, b: f"{image.stem}-2"}
    out = tmp_path / "out"
    assert main(predict_argv(checkpoint, a, b, out=out)) == 0
    rows = _rows(out / "predictions.csv")
    assert [r["source"] for r in rows] == [str(a), str(b)]
    assert [r["outputs"].split(";")[0] for r in rows] == [
        f"{image.stem}_overlay.png",
        f"{image.stem}-2_overlay.png",
    ]
    assert all(r["sop_instance_uid"] == r["series_instance_uid"] == "" for r in rows)


def test_series_maps_and_masks_as_nifti_in_the_series_geometry(checkpoint, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    nib = pytest.importorskip("nibabel")
    import numpy as np

    from iqeclip.data.readers import read_dicom_series
    from tests.unit.data.readers.test_model_input import world_ras, write_series

    folder = write_series(pydicom, tmp_path / "ct", n=3)
    out = tmp_path / "out"
    assert main([*predict_argv(checkpoint, folder, out=out), "--outputs", "npy"]) == 0
    written = nib.load(str(out / "ct_anomaly.nii.gz"))
    assert written.shape == (128, 128, 3)
    np.testing.assert_allclose(written.affine, read_dicom_series(folder)[0].geometry.affine)
    # voxel (column 9, row 4, slice 2) is where that pixel lies, by the DICOM definition
    np.testing.assert_allclose(written.affine @ [9, 4, 2, 1], [*world_ras(4, 9, 2), 1], atol=1e-4)
    data = np.asarray(written.dataobj)
    for k in range(3):  # slice k of the volume is slice k's map, on the (column, row) grid
        assert np.array_equal(data[:, :, k], np.load(out / f"ct_s{k:03d}_map.npy").T)
