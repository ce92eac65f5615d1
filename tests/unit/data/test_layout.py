"""Tests for the MVFA/BMAD folder layout and the few-shot support lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from iqeclip.data.layout import (
    CLASS_INDEX,
    IMAGE_SUFFIXES,
    available_datasets,
    dataset_root,
    find_support_list,
    has_masks,
    list_split,
    read_support_list,
    support_set,
)
from iqeclip.data.sample import Sample
from iqeclip.errors import UserError

GOOD = ["n03.png", "n01.png", "n02.png", "n05.png", "n04.png"]
BAD = ["a02.png", "a04.png", "a01.png", "a03.png"]


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), value).save(path)


def _make_dataset(
    data: Path, name: str, masks: bool, good: list[str] = GOOD, bad: list[str] = BAD
) -> Path:
    root = data / f"{name}_AD"
    for split in ("valid", "test"):
        for f in good:
            _png(root / split / "good" / "img" / f, 10)
        for f in bad:
            _png(root / split / "Ungood" / "img" / f, 200)
            if masks:
                _png(root / split / "Ungood" / "anomaly_mask" / f, 255)
    return root


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    _make_dataset(d, "Brain", masks=True)
    _make_dataset(d, "Chest", masks=False)
    return d


def test_constants() -> None:
    # MVFA's published indices: the mask datasets count down from 3, the label-only ones from -1.
    names = ("Brain", "Liver", "Retina_RESC", "Retina_OCT2017", "Chest", "Histopathology")
    assert dict(zip(names, (3, 2, 1, -1, -2, -3), strict=True)) == CLASS_INDEX
    for s in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        assert s in IMAGE_SUFFIXES


def test_available_and_root(data: Path) -> None:
    (data / "notes_AD.txt").write_text("x")  # a file, not a folder
    (data / "other").mkdir()
    assert available_datasets(data) == ["Brain", "Chest"]
    assert dataset_root(data, "Brain") == data / "Brain_AD"
    assert dataset_root(str(data), "Chest") == data / "Chest_AD"


def test_dataset_root_missing_lists_existing(data: Path) -> None:
    with pytest.raises(UserError) as err:
        dataset_root(data, "Liver")
    msg = str(err.value)
    assert str(data / "Liver_AD") in msg
    assert "Brain_AD" in msg and "Chest_AD" in msg


def test_missing_data_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="nope"):
        available_datasets(missing)
    with pytest.raises(UserError, match="nope"):
        dataset_root(missing, "Brain")


def test_has_masks_known_and_user(data: Path) -> None:
    assert has_masks(data, "Brain")
    assert not has_masks(data, "Chest")
    _make_dataset(data, "MyScan", masks=True)
    _make_dataset(data, "MyXray", masks=False)
    assert has_masks(data, "MyScan")
    assert not has_masks(data, "MyXray")
    with pytest.raises(UserError, match="Nothing_AD"):
        has_masks(data, "Nothing")


def test_list_split_order_and_masks(data: Path) -> None:
    samples = list_split(data, "Brain", "test")
    root = data / "Brain_AD" / "test"
    assert [s.image.name for s in samples] == sorted(GOOD) + sorted(BAD)
    assert [s.label for s in samples] == [0] * len(GOOD) + [1] * len(BAD)
    for s in samples:
        assert isinstance(s, Sample)
        if s.label == 0:
            assert s.image.parent == root / "good" / "img"
            assert s.mask is None
        else:
            assert s.image.parent == root / "Ungood" / "img"
            assert s.mask == root / "Ungood" / "anomaly_mask" / s.image.name


def test_list_split_image_only(data: Path) -> None:
    samples = list_split(data, "Chest", "valid")
    assert [s.image.name for s in samples] == sorted(GOOD) + sorted(BAD)
    assert all(s.mask is None for s in samples)


def test_list_split_suffixes_and_junk(tmp_path: Path) -> None:
    d = tmp_path / "data"
    root = _make_dataset(d, "Mine", masks=False, good=["b.png"], bad=["a.png"])
    img = root / "test" / "good" / "img"
    for name in ("c.JPG", "d.jpeg", "e.tif", "f.tiff", "g.bmp"):
        Image.new("RGB", (4, 4)).save(img / name)
    (img / "Thumbs.db").write_bytes(b"junk")
    (img / "readme.txt").write_text("x")
    (img / "._b.png").write_bytes(b"resource fork")
    names = [s.image.name for s in list_split(d, "Mine", "test")]
    assert names == ["b.png", "c.JPG", "d.jpeg", "e.tif", "f.tiff", "g.bmp", "a.png"]


def test_list_split_missing_mask(data: Path) -> None:
    mask = data / "Brain_AD" / "test" / "Ungood" / "anomaly_mask" / "a03.png"
    mask.unlink()
    with pytest.raises(UserError) as err:
        list_split(data, "Brain", "test")
    msg = str(err.value)
    assert str(data / "Brain_AD" / "test" / "Ungood" / "img" / "a03.png") in msg
    assert str(mask) in msg


def test_list_split_missing_split_and_folder(data: Path, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(data / "Chest_AD" / "valid")
    with pytest.raises(UserError) as err:
        list_split(data, "Chest", "valid")
    assert str(data / "Chest_AD" / "valid") in str(err.value)

    shutil.rmtree(data / "Chest_AD" / "test" / "Ungood" / "img")
    with pytest.raises(UserError) as err:
        list_split(data, "Chest", "test")
    assert str(data / "Chest_AD" / "test" / "Ungood" / "img") in str(err.value)

    with pytest.raises(UserError, match="train"):
        list_split(data, "Brain", "train")


def test_list_split_empty(tmp_path: Path) -> None:
    d = tmp_path / "data"
    split = d / "Empty_AD" / "test"
    (split / "good" / "img").mkdir(parents=True)
    (split / "Ungood" / "img").mkdir(parents=True)
    (split / "good" / "img" / "notes.txt").write_text("x")
    with pytest.raises(UserError) as err:
        list_split(d, "Empty", "test")
    assert str(split) in str(err.value)


# ----------------------------------------------------------------------------- support lists

A_LINE = "a-0: a03.png a01.png"
N_LINE = "n-0: n04.png n02.png"


@pytest.mark.parametrize(
    "text",
    [
        f"{A_LINE}\n{N_LINE}\n",
        f"{A_LINE}\n{N_LINE}",
        f"{N_LINE}\n{A_LINE}\n",
        f"{N_LINE}\r\n{A_LINE}\r\n",
        f"{A_LINE}\r\n{N_LINE}",
        f"\n\n{A_LINE}\n\n  \n{N_LINE}\n\n",
        f"\ufeff{A_LINE}\n{N_LINE}\n",
        "a-0:  a03.png\ta01.png  \nn-0:n04.png n02.png\n",
    ],
)
def test_read_support_list_formats(tmp_path: Path, text: str) -> None:
    path = tmp_path / "2-shot.txt"
    path.write_bytes(text.encode("utf-8"))
    assert read_support_list(path) == (["a03.png", "a01.png"], ["n04.png", "n02.png"])


def test_read_support_list_real_format(tmp_path: Path) -> None:
    path = tmp_path / "4-shot.txt"
    path.write_text(
        "a-0: 01388_60.png 01471_60.png 00154_60.png 01646_90.png\n"
        "n-0: 01325_99.png 00250_60.png 01555_60.png 01181_99.png"
    )
    abnormal, normal = read_support_list(path)
    assert abnormal == ["01388_60.png", "01471_60.png", "00154_60.png", "01646_90.png"]
    assert normal == ["01325_99.png", "00250_60.png", "01555_60.png", "01181_99.png"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f"{A_LINE}\n", "'n-0'"),
        (f"{N_LINE}\n", "'a-0'"),
        ("", "'a-0' or 'n-0'"),
        (f"{A_LINE}\n{N_LINE}\n{A_LINE}\n", "line 3"),
        (f"{A_LINE}\nhello world\n{N_LINE}\n", "line 2"),
        (f"{A_LINE}\n{N_LINE}\na-1: x.png\n", "line 3"),
        (f"{A_LINE}\nn-0:\n", "line 2"),
        (f"a0: a.png\n{N_LINE}\n", "line 1"),
    ],
)
def test_read_support_list_malformed(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad-shot.txt"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        read_support_list(path)
    assert str(path) in str(err.value)
    assert fragment in str(err.value)


def test_read_support_list_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing\.txt"):
        read_support_list(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81\x90")
    with pytest.raises(UserError, match=r"binary\.txt"):
        read_support_list(binary)


def _write_list(folder: Path, name: str, shot: int, text: str) -> Path:
    path = folder / name / f"{shot}-shot.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_find_support_list_order(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    text = f"{A_LINE}\n{N_LINE}\n"

    with pytest.raises(UserError) as err:
        find_support_list("Brain", 2, None, data)
    msg = str(err.value)
    assert str(data / "fewshot_seed" / "Brain" / "2-shot.txt") in msg
    assert str(Path("dataset") / "fewshot_seed" / "Brain" / "2-shot.txt") in msg

    local = _write_list(cwd / "dataset" / "fewshot_seed", "Brain", 2, text)
    assert find_support_list("Brain", 2, None, data).resolve() == local.resolve()
    in_data = _write_list(data / "fewshot_seed", "Brain", 2, text)
    assert find_support_list("Brain", 2, None, data) == in_data

    seeds = tmp_path / "seeds"
    with pytest.raises(UserError) as err:
        find_support_list("Brain", 2, seeds, data)
    assert str(seeds / "Brain" / "2-shot.txt") in str(err.value)
    explicit = _write_list(seeds, "Brain", 2, text)
    assert find_support_list("Brain", 2, seeds, data) == explicit


def test_support_set_from_list(data: Path, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    _write_list(seeds, "Brain", 2, f"{N_LINE}\n{A_LINE}")
    abnormal, normal = support_set(data, "Brain", 2, 0, seed_dir=seeds)
    valid = data / "Brain_AD" / "valid"
    assert [s.image for s in abnormal] == [
        valid / "Ungood" / "img" / "a03.png",
        valid / "Ungood" / "img" / "a01.png",
    ]
    assert [s.mask for s in abnormal] == [
        valid / "Ungood" / "anomaly_mask" / "a03.png",
        valid / "Ungood" / "anomaly_mask" / "a01.png",
    ]
    assert all(s.label == 1 for s in abnormal)
    assert [s.image for s in normal] == [
        valid / "good" / "img" / "n04.png",
        valid / "good" / "img" / "n02.png",
    ]
    assert all(s.label == 0 and s.mask is None for s in normal)

    _write_list(seeds, "Chest", 2, f"{A_LINE}\n{N_LINE}\n")
    abnormal, _ = support_set(data, "Chest", 2, 0, seed_dir=seeds)
    assert all(s.mask is None for s in abnormal)


def test_support_set_list_errors(data: Path, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    path = _write_list(seeds, "Brain", 2, f"a-0: a01.png a09.png\n{N_LINE}\n")
    with pytest.raises(UserError) as err:
        support_set(data, "Brain", 2, 0, seed_dir=seeds)
    msg = str(err.value)
    assert str(path) in msg
    assert str(data / "Brain_AD" / "valid" / "Ungood" / "img" / "a09.png") in msg

    # a normal name listed on the abnormal line does not exist in Ungood/img
    path = _write_list(seeds, "Brain", 2, f"a-0: a01.png n01.png\n{N_LINE}\n")
    with pytest.raises(UserError, match=r"n01\.png"):
        support_set(data, "Brain", 2, 0, seed_dir=seeds)

    path = _write_list(seeds, "Brain", 4, f"{A_LINE}\n{N_LINE}\n")
    with pytest.raises(UserError) as err:
        support_set(data, "Brain", 4, 0, seed_dir=seeds)
    assert str(path) in str(err.value)

    with pytest.raises(UserError, match="iteration 0"):
        support_set(data, "Brain", 2, 1, seed_dir=seeds)
    with pytest.raises(UserError) as err:
        support_set(data, "Brain", 8, 0, seed_dir=seeds)
    assert str(seeds / "Brain" / "8-shot.txt") in str(err.value)
    with pytest.raises(UserError, match="shot"):
        support_set(data, "Brain", 0, -1)


def test_support_set_random(data: Path) -> None:
    a1, n1 = support_set(data, "Brain", 2, -1, seed=1)
    a1b, n1b = support_set(data, "Brain", 2, -1, seed=1)
    assert (a1, n1) == (a1b, n1b)
    assert len(a1) == 2 and len(n1) == 2
    assert len({s.image for s in a1}) == 2 and len({s.image for s in n1}) == 2
    assert all(s.label == 1 and s.mask is not None for s in a1)
    assert all(s.label == 0 and s.mask is None for s in n1)
    assert all(s.image.parent.parent.name == "Ungood" for s in a1)
    assert all(s.image.parent.parent.name == "good" for s in n1)
    draws = {
        tuple(s.image.name for s in a + n)
        for a, n in (support_set(data, "Brain", 2, -1, seed=k) for k in range(8))
    }
    assert len(draws) > 1  # another seed gives another draw
    a2, n2 = support_set(data, "Brain", 2, -1, seed=2)
    assert (a2, n2) != (a1, n1)


def test_support_set_random_too_few(data: Path) -> None:
    with pytest.raises(UserError) as err:
        support_set(data, "Brain", 8, -1)
    assert str(data / "Brain_AD" / "valid" / "Ungood" / "img") in str(err.value)
