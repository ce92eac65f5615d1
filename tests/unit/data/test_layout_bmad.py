"""BMAD's own folder layout beside MVFA's: the synthetic writer's two layouts list the same samples,
the support lists serve both, and an ambiguous or wrong ``--layout`` is a one-line error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from iqeclip.data.layout import (
    available_datasets,
    dataset_root,
    has_masks,
    has_split,
    in_mask_folder,
    list_split,
    support_set,
)
from iqeclip.data.synth import DATASETS, MASK_DATASETS
from iqeclip.data.synth.writer import write_benchmark
from iqeclip.errors import UserError, as_flag


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same synthetic benchmark in the MVFA and in the BMAD layout."""
    mvfa, bmad = tmp_path_factory.mktemp("mvfa"), tmp_path_factory.mktemp("bmad")
    counts = write_benchmark(mvfa, size=3, seed=1, image_size=32, overwrite=True)
    assert write_benchmark(bmad, size=3, seed=1, image_size=32, overwrite=True, layout="bmad") == (
        counts
    )
    return mvfa, bmad


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), value).save(path)


def _one_line(err: pytest.ExceptionInfo[UserError]) -> str:
    """The message as the command line writes it (parameters as flags), checked to be one line."""
    message = err.value.render(as_flag)
    assert "\n" not in message
    return message


def test_writer_writes_bmads_folders(both: tuple[Path, Path]) -> None:
    _, bmad = both
    assert not list(bmad.glob("*_AD"))
    for name in DATASETS:
        for split in ("valid", "test"):
            ungood = bmad / name / split / "Ungood"
            if name in MASK_DATASETS:  # pixel-mask datasets: img/ and label/ folders
                assert (bmad / name / split / "good" / "img").is_dir()
                names = {p.name for p in (ungood / "img").iterdir()}
                assert names == {p.name for p in (ungood / "label").iterdir()}
                assert not (ungood / "anomaly_mask").exists()
            else:  # image-label datasets: images straight in the class folders
                assert not (ungood / "img").exists() and not (ungood / "label").exists()
                assert any(p.is_file() for p in ungood.iterdir())
    with pytest.raises(UserError) as err:
        write_benchmark(bmad / "x", layout="nnunet")
    assert "--layout 'nnunet'" in _one_line(err)


def test_both_layouts_list_the_same_samples(both: tuple[Path, Path]) -> None:
    mvfa, bmad = both
    assert available_datasets(bmad) == available_datasets(mvfa) == sorted(DATASETS)
    assert available_datasets(bmad, "bmad") == sorted(DATASETS)
    assert available_datasets(bmad, "mvfa") == []
    for name in DATASETS:
        assert dataset_root(bmad, name) == bmad / name
        assert has_masks(bmad, name) == has_masks(mvfa, name) == (name in MASK_DATASETS)
        for split in ("valid", "test"):
            a, b = list_split(mvfa, name, split), list_split(bmad, name, split, layout="bmad")
            assert [(s.image.name, s.label, s.mask is None) for s in a] == [
                (s.image.name, s.label, s.mask is None) for s in b
            ]
            for x, y in zip(a, b, strict=True):
                assert x.image.read_bytes() == y.image.read_bytes()
                if y.mask is not None:
                    assert y.mask.parent.name == "label" and y.mask.is_file()
                    assert x.mask is not None and x.mask.read_bytes() == y.mask.read_bytes()


@pytest.mark.parametrize("iterate", [0, -1])
def test_support_lists_map_onto_the_bmad_valid_split(both: tuple[Path, Path], iterate: int) -> None:
    mvfa, bmad = both
    seeds = mvfa / "fewshot_seed"  # one set of lists, read against either layout
    for name in ("Brain", "Chest"):
        got = support_set(bmad, name, 4, iterate, seed_dir=seeds, seed=3, layout="bmad")
        want = support_set(mvfa, name, 4, iterate, seed_dir=seeds, seed=3)
        for g, w in zip(got, want, strict=True):
            assert [s.image.name for s in g] == [s.image.name for s in w]
            assert all(s.image.is_relative_to(bmad / name / "valid") for s in g)
        assert all((s.mask is not None) == (name == "Brain") for s in got[0])
    # the lists found in <data_path>/fewshot_seed of the BMAD folder, as in the MVFA one
    assert [s.image.name for s in support_set(bmad, "Liver", 2, 0)[0]] == [
        s.image.name for s in support_set(mvfa, "Liver", 2, 0)[0]
    ]


def test_a_listed_name_missing_in_the_bmad_layout_names_its_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for split in ("valid", "test"):
        _png(data / "Chest" / split / "good" / "n1.png")
        _png(data / "Chest" / split / "Ungood" / "a1.png")
    seeds = tmp_path / "seeds" / "Chest"
    seeds.mkdir(parents=True)
    (seeds / "1-shot.txt").write_text("a-0: a9.png\nn-0: n1.png\n")
    with pytest.raises(UserError) as err:
        support_set(data, "Chest", 1, 0, seed_dir=tmp_path / "seeds")
    assert str(data / "Chest" / "valid" / "Ungood" / "a9.png") in _one_line(err)


def test_both_layouts_for_one_dataset_need_layout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for root, images, masks in (("Brain_AD", "img", "anomaly_mask"), ("Brain", "img", "label")):
        for split in ("valid", "test"):
            _png(data / root / split / "good" / images / "n1.png", 1)
            _png(data / root / split / "Ungood" / images / "a1.png", 2)
            _png(data / root / split / "Ungood" / masks / "a1.png", 255)
    with pytest.raises(UserError) as err:
        list_split(data, "Brain", "test")
    message = _one_line(err)
    assert "--layout" in message and str(data / "Brain_AD") in message
    assert str(data / "Brain") in message
    assert list_split(data, "Brain", "test", layout="bmad")[1].mask == (
        data / "Brain" / "test" / "Ungood" / "label" / "a1.png"
    )
    assert list_split(data, "Brain", "test", layout="mvfa")[1].mask == (
        data / "Brain_AD" / "test" / "Ungood" / "anomaly_mask" / "a1.png"
    )
    assert available_datasets(data) == ["Brain"]  # listed once; choosing happens on reading


def test_a_wrong_layout_names_what_was_found(both: tuple[Path, Path]) -> None:
    mvfa, bmad = both
    with pytest.raises(UserError) as err:
        list_split(mvfa, "Liver", "test", layout="bmad")
    message = _one_line(err)
    assert "--layout bmad" in message and str(mvfa / "Liver_AD") in message
    assert "MVFA" in message
    with pytest.raises(UserError) as err:
        dataset_root(bmad, "Liver", "mvfa")
    message = _one_line(err)
    assert "--layout mvfa" in message and str(bmad / "Liver") in message
    with pytest.raises(UserError) as err:
        dataset_root(bmad, "Liver", "nnunet")
    assert "--layout 'nnunet'" in _one_line(err) and "bmad, mvfa" in str(err.value)


def test_a_missing_dataset_lists_both_layouts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _png(data / "Brain_AD" / "test" / "good" / "img" / "n.png")
    _png(data / "camelyon16" / "test" / "good" / "n.png")
    (data / "Kidney" / "train" / "good").mkdir(parents=True)  # no valid/ nor test/
    with pytest.raises(UserError) as err:
        dataset_root(data, "Liver")
    message = _one_line(err)
    assert str(data / "Liver_AD") in message and str(data / "Liver") in message
    assert "Brain_AD" in message and "camelyon16" in message
    with pytest.raises(UserError) as err:
        dataset_root(data, "Kidney")
    assert "no valid/ or test/" in _one_line(err)
    assert available_datasets(data) == ["Brain", "Histopathology"]


def test_bmad_variants_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # BMAD's README shows the histopathology dataset as camelyon16, image-label only
    for split in ("valid", "test"):
        _png(data / "camelyon16" / split / "good" / "b.png")
        _png(data / "camelyon16" / split / "good" / "a.png")
        _png(data / "camelyon16" / split / "Ungood" / "c.png")
    _png(data / "camelyon16" / "train" / "good" / "t.png")  # BMAD's train split: not read
    samples = list_split(data, "Histopathology", "valid")
    assert [(s.image.name, s.label, s.mask) for s in samples] == [
        ("a.png", 0, None),
        ("b.png", 0, None),
        ("c.png", 1, None),
    ]
    assert dataset_root(data, "Histopathology", "bmad") == data / "camelyon16"
    # a user's dataset: masks in label/ (or anomaly_mask/) make it a mask dataset
    for name, masks in (("Knee", "label"), ("Hip", "anomaly_mask"), ("Skin", None)):
        _png(data / name / "test" / "good" / "img" / "n.png")
        _png(data / name / "test" / "Ungood" / "img" / "a.png")
        if masks:
            _png(data / name / "test" / "Ungood" / masks / "a.png", 255)
        assert has_masks(data, name) == (masks is not None)
        mask = list_split(data, name, "test")[1].mask
        assert mask == (
            None if masks is None else data / name / "test" / "Ungood" / masks / "a.png"
        )
    assert has_split(data, "Knee", "test") and not has_split(data, "Knee", "valid")
    assert not has_split(data, "Nothing", "test") and not has_split(tmp_path / "no", "K", "test")
    # one dataset under two BMAD names is refused
    shutil.copytree(data / "camelyon16", data / "Histopathology")
    with pytest.raises(UserError) as err:
        list_split(data, "Histopathology", "valid")
    assert "camelyon16" in _one_line(err) and "keep one" in str(err.value)


def test_mask_folders_of_both_layouts_are_known() -> None:
    assert in_mask_folder(("Brain_AD", "test", "Ungood", "anomaly_mask"))
    assert in_mask_folder(("Brain", "valid", "Ungood", "label"))
    assert in_mask_folder(("Ungood", "label"))
    assert not in_mask_folder(("Brain", "valid", "Ungood", "img"))
    assert not in_mask_folder(("scans", "label"))  # a label folder elsewhere is not BMAD's
    assert not in_mask_folder(())
