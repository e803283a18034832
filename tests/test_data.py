"""Class-folder loading: aliases, foreign classes, unreadable files, clear errors, de-duplication."""

from __future__ import annotations

import hashlib
import logging
import shutil

import numpy as np
import pytest
from conftest import make_faces

from lldif_edge.data import FER_CLASSES, FolderData, drop_duplicates, load_folder, read_image, scan_folder
from lldif_edge.errors import DataError


def test_load_folder_decodes_every_image(tmp_path):
    make_faces(tmp_path, 3)
    ds = load_folder(tmp_path, FER_CLASSES, size=48, channels=1)
    assert ds.images.shape == (21, 48, 48, 1) and ds.images.dtype == np.uint8
    assert sorted(np.bincount(ds.labels)) == [3] * 7
    assert ds.classes == FER_CLASSES
    assert len(ds.paths) == len(ds.sha1) == 21
    for path, label in zip(ds.paths, ds.labels, strict=True):
        assert f"/{FER_CLASSES[label]}/" in path


def test_resize_and_channels(tmp_path):
    make_faces(tmp_path, 1, classes=["happy"], ext=".jpg")
    ds = load_folder(tmp_path, FER_CLASSES, size=32, channels=3)
    assert ds.images.shape == (1, 32, 32, 3)


def test_alias_folders_map_to_canonical_classes(tmp_path):
    make_faces(tmp_path, 2, classes=["anger", "sadness", "Surprised", "happy"])
    ds = load_folder(tmp_path, FER_CLASSES)
    got = {p.split("/")[-2]: FER_CLASSES[label] for p, label in zip(ds.paths, ds.labels, strict=True)}
    assert got == {"anger": "angry", "sadness": "sad", "Surprised": "surprise", "happy": "happy"}


def test_contempt_folder_is_skipped_with_a_warning(tmp_path, caplog):
    make_faces(tmp_path, 2, classes=["happy", "contempt"])
    with caplog.at_level(logging.WARNING, logger="lldif_edge.data"):
        ds = load_folder(tmp_path, FER_CLASSES)
    assert len(ds) == 2 and set(ds.labels) == {FER_CLASSES.index("happy")}
    assert any("contempt" in r.getMessage() and "2" in r.getMessage() for r in caplog.records)


def test_unknown_class_folder_is_named(tmp_path):
    make_faces(tmp_path, 1, classes=["happy", "banana"])
    with pytest.raises(DataError, match="banana"):
        load_folder(tmp_path, FER_CLASSES)


def test_missing_and_empty_folders_are_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="nope"):
        load_folder(missing, FER_CLASSES)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        load_folder(empty, FER_CLASSES)
    no_images = tmp_path / "no_images"
    (no_images / "happy").mkdir(parents=True)
    (no_images / "happy" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no_images"):
        scan_folder(no_images, FER_CLASSES)


def test_corrupt_image_is_skipped_counted_and_named(tmp_path, caplog):
    make_faces(tmp_path, 2, classes=["happy", "sad"])
    bad = tmp_path / "sad" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff this is not a jpeg")
    (tmp_path / "happy" / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="lldif_edge.data"):
        ds = load_folder(tmp_path, FER_CLASSES)
    assert len(ds) == 4
    messages = [r.getMessage() for r in caplog.records]
    assert any("broken.jpg" in m for m in messages)
    assert any("empty.png" in m for m in messages)
    assert any("2 of 6" in m for m in messages)


def test_only_corrupt_images_is_an_error(tmp_path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no readable images"):
        load_folder(tmp_path, FER_CLASSES)


def test_drop_duplicates_removes_val_images_shared_with_train(tmp_path):
    train_root = make_faces(tmp_path / "train", 3, seed=1)
    val_root = make_faces(tmp_path / "val", 3, seed=2)
    shutil.copy(train_root / "happy" / "000.png", val_root / "happy" / "dup_of_train.png")
    shutil.copy(train_root / "sad" / "001.png", val_root / "angry" / "dup_other_label.png")
    shutil.copy(val_root / "fear" / "002.png", val_root / "fear" / "dup_in_val.png")
    train, val = load_folder(train_root, FER_CLASSES), load_folder(val_root, FER_CLASSES)
    assert len(val) == 24
    kept, stats = drop_duplicates(val, train)
    assert stats == {"shared_with_train": 2, "repeated_in_val": 1}
    assert len(kept) == 21
    assert not set(kept.sha1) & set(train.sha1)
    assert len(set(kept.sha1)) == len(kept)
    assert kept.images.shape[0] == len(kept.labels) == len(kept.paths)
    # Without a training set only repeats within validation go.
    alone, stats = drop_duplicates(val)
    assert len(alone) == 23 and stats["repeated_in_val"] == 1


# ---------------------------------------------------------------- ../shared/data (skipped when absent)
def test_fer2013_val_loads(shared_data):
    root = shared_data / "fer2013" / "val"
    items = scan_folder(root, FER_CLASSES)
    assert len(items) > 3000
    assert {label for _, label in items} == set(range(7))
    images = [read_image(path, 48, 1) for path, _ in items[::500]]  # a handful is enough
    assert all(im is not None and im.shape == (48, 48, 1) for im in images)


def test_fer2013_val_has_duplicates_of_train(shared_data):
    root = shared_data / "fer2013"

    def hashed(split: str) -> FolderData:
        items = scan_folder(root / split, FER_CLASSES)
        sha1 = [hashlib.sha1(p.read_bytes()).hexdigest() for p, _ in items]
        n = len(items)
        return FolderData(np.zeros((n, 1, 1, 1), np.uint8), np.array([label for _, label in items]),
                          FER_CLASSES, [str(p) for p, _ in items], sha1)

    train, val = hashed("train"), hashed("val")
    kept, stats = drop_duplicates(val, train)
    assert stats["shared_with_train"] > 0
    assert len(kept) == len(val) - stats["shared_with_train"] - stats["repeated_in_val"]
    assert not set(kept.sha1) & set(train.sha1)
    assert len(set(kept.sha1)) == len(kept)
