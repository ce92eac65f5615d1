"""Tests of the synthetic MVFA/BMAD-layout benchmark writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from iqeclip.data import synth
from iqeclip.data.synth import DATASETS, MASK_DATASETS, SHOTS, write_benchmark
from iqeclip.errors import UserError

SIZE = 3
SMALL = 64  # image side for the runs that only compare files


def _ext(name: str) -> str:
    return ".jpeg" if name == "Retina_OCT2017" else ".png"


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _parse_support(path: Path) -> dict[str, list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2, lines
    parsed: dict[str, list[str]] = {}
    for line, tag in zip(lines, ("a-0", "n-0"), strict=True):
        head, _, rest = line.partition(":")
        assert head == tag, line
        parsed[tag] = rest.split()
    return parsed


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, int]]]:
    """The benchmark at the default image size, with a small test split."""
    out = tmp_path_factory.mktemp("bench") / "synth"
    return out, write_benchmark(out, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small")
    write_benchmark(out, size=SIZE, seed=0, image_size=SMALL)
    return out


def test_layout_and_counts(bench: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, counts = bench
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{name}_AD" for name in DATASETS] + ["fewshot_seed"]
    )
    assert set(counts) == set(DATASETS)
    for name in DATASETS:
        root = out / f"{name}_AD"
        assert sorted(p.name for p in root.iterdir()) == ["test", "valid"]
        for split, per_class in (("valid", 16), ("test", SIZE)):
            assert counts[name][split] == 2 * per_class
            for label in ("good", "Ungood"):
                names = _files(root / split / label / "img")
                assert names == [f"{i:05d}{_ext(name)}" for i in range(per_class)]
                expected = ["anomaly_mask", "img"]
                if label == "good" or name not in MASK_DATASETS:
                    expected = ["img"]
                assert _files(root / split / label) == expected


def test_image_formats(bench: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, _ = bench
    for name in DATASETS:
        for path in sorted((out / f"{name}_AD").rglob("img/*")):
            with Image.open(path) as image:
                assert image.size == (128, 128)
                assert image.format == ("JPEG" if name == "Retina_OCT2017" else "PNG")
                assert image.mode == ("RGB" if name == "Histopathology" else "L")
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left


def test_masks_mark_visible_anomalies(bench: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, _ = bench
    for name in MASK_DATASETS:
        for split in ("valid", "test"):
            ungood = out / f"{name}_AD" / split / "Ungood"
            assert _files(ungood / "anomaly_mask") == _files(ungood / "img")
            for mask_path in sorted((ungood / "anomaly_mask").iterdir()):
                with Image.open(mask_path) as m, Image.open(ungood / "img" / mask_path.name) as i:
                    assert m.mode == "L"
                    assert m.size == i.size
                    mask, image = np.asarray(m), np.asarray(i, dtype=np.float64)
                assert set(np.unique(mask)) == {0, 255}, mask_path
                inside = mask == 255
                ring = ndimage.binary_dilation(inside, iterations=3) & ~inside
                contrast = abs(image[inside].mean() - image[ring].mean())
                assert contrast > image[ring].std(), (mask_path, contrast)


def test_normal_images_vary(bench: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, _ = bench
    for name in DATASETS:
        folder = out / f"{name}_AD" / "valid" / "good" / "img"
        first, second = (np.asarray(Image.open(folder / f"{i:05d}{_ext(name)}")) for i in (0, 1))
        assert np.abs(first.astype(int) - second.astype(int)).mean() > 2.0, name


def test_support_lists(bench: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, _ = bench
    for name in DATASETS:
        shot_dir = out / "fewshot_seed" / name
        assert _files(shot_dir) == sorted(f"{k}-shot.txt" for k in SHOTS)
        valid = out / f"{name}_AD" / "valid"
        for k in SHOTS:
            support = _parse_support(shot_dir / f"{k}-shot.txt")
            for tag, label in (("a-0", "Ungood"), ("n-0", "good")):
                names = support[tag]
                assert len(names) == len(set(names)) == k
                for file_name in names:
                    assert (valid / label / "img" / file_name).is_file()


def test_deterministic_and_size_independent(small: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_benchmark(again, size=SIZE + 2, seed=0, image_size=SMALL)
    other = tmp_path / "other"
    write_benchmark(other, size=SIZE, seed=1, image_size=SMALL)
    for name in DATASETS:
        for rel in (
            f"{name}_AD/valid/good/img/00000{_ext(name)}",
            f"{name}_AD/valid/Ungood/img/00015{_ext(name)}",
            f"{name}_AD/test/good/img/00002{_ext(name)}",  # test split grew from 3 to 5
            f"{name}_AD/test/Ungood/img/00000{_ext(name)}",
            "fewshot_seed/" + name + "/4-shot.txt",
        ):
            assert (small / rel).read_bytes() == (again / rel).read_bytes(), rel
        for rel in (
            f"{name}_AD/valid/good/img/00000{_ext(name)}",
            f"{name}_AD/test/Ungood/img/00001{_ext(name)}",
        ):
            assert (small / rel).read_bytes() != (other / rel).read_bytes(), rel
    assert (small / "Brain_AD/test/Ungood/anomaly_mask/00000.png").read_bytes() == (
        again / "Brain_AD/test/Ungood/anomaly_mask/00000.png"
    ).read_bytes()


def test_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(UserError, match=str(tmp_path)):
        write_benchmark(tmp_path, size=1, image_size=32)
    assert _files(tmp_path) == ["notes.txt"]


def test_overwrite_replaces_own_folders_only(tmp_path: Path) -> None:
    write_benchmark(tmp_path, size=4, image_size=32)
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    counts = write_benchmark(tmp_path, size=2, image_size=32, overwrite=True)
    assert counts["Liver"] == {"valid": 32, "test": 4}
    assert len(_files(tmp_path / "Liver_AD" / "test" / "Ungood" / "img")) == 2
    assert len(_files(tmp_path / "Liver_AD" / "test" / "Ungood" / "anomaly_mask")) == 2
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="image_size must be at least 32"):
        write_benchmark(tmp_path / "a", image_size=16)
    with pytest.raises(UserError, match="size"):
        write_benchmark(tmp_path / "b", size=0)
    afile = tmp_path / "file"
    afile.write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="file"):
        write_benchmark(afile)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("name", MASK_DATASETS)
def test_mask_is_exactly_the_changed_pixels(name: str) -> None:
    # The abnormal image is the normal image drawn from the same random stream plus the anomaly.
    for index in range(4):
        normal, no_mask = synth._RENDERERS[name](synth._stream(0, name, "t", index), 96, False)
        abnormal, mask = synth._RENDERERS[name](synth._stream(0, name, "t", index), 96, True)
        assert no_mask is None and mask is not None
        assert mask.shape == abnormal.shape == normal.shape == (96, 96)
        assert mask.any()
        np.testing.assert_array_equal(mask, abnormal != normal)
