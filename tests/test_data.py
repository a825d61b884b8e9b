"""Tests for dse.data: digits, fake CIFAR directories, errors, download, augmentation, batching."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import io
import os
import pathlib
import pickle
import sys
import tarfile
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dse import data
from dse.errors import DataError
from dse.data import (
    DATASETS,
    Split,
    dataset_spec,
    download_cifar,
    iterate_batches,
    load_dataset,
    random_crop_flip,
    stratified_subset,
)


def _load_fixture_module():
    """Import tests/_cifar_fixture.py by path (works whatever pytest's import mode)."""
    path = pathlib.Path(__file__).with_name("_cifar_fixture.py")
    spec = importlib.util.spec_from_file_location("_dse_cifar_fixture", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fx = _load_fixture_module()

REAL_CIFAR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_fraction=0.1, seed=0)


@pytest.fixture()
def fake10(tmp_path):
    return fx.write_fake_cifar10(tmp_path / "c10")


@pytest.fixture()
def fake100(tmp_path):
    return fx.write_fake_cifar100(tmp_path / "c100")


@pytest.fixture()
def http_dir(tmp_path):
    """Serve a directory over HTTP on 127.0.0.1; yields (directory, base_url)."""
    served = tmp_path / "served"
    served.mkdir()

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - signature from the base class
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _row_counter(*splits):
    counter = Counter()
    for s in splits:
        for xi, yi in zip(s.x.reshape(len(s), -1).numpy(), s.y.tolist()):
            counter[(xi.tobytes(), yi)] += 1
    return counter


def _to_uint8_rows(split):
    return (split.x * 255).round().to(torch.uint8).reshape(len(split), -1).numpy()


# --------------------------------------------------------------------------- digits


def test_datasets_constant():
    assert DATASETS == ("digits", "cifar10", "cifar100")


def test_digits_shapes_and_range(digits):
    spec = digits.spec
    assert (spec.name, spec.in_channels, spec.image_size, spec.num_classes, spec.augment) == ("digits", 1, 8, 10, False)
    assert len(spec.mean) == len(spec.std) == 1
    for s in (digits.train, digits.val, digits.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert s.x.shape[1:] == (1, 8, 8) and s.x.is_contiguous()
        assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
        assert set(s.y.unique().tolist()) == set(range(10))
    assert len(digits.train) + len(digits.val) == 1437 and len(digits.test) == 360
    assert len(digits.val) == round(0.1 * 1437)
    # Normalisation comes from the fixed training pool (train + val), whatever the seed or subset.
    pool = torch.cat([digits.train.x, digits.val.x])
    assert abs(spec.mean[0] - float(pool.mean())) < 1e-6
    assert abs(spec.std[0] - float(pool.std(correction=0))) < 1e-6
    assert load_dataset("digits", subset=30, val_fraction=0.3, seed=9).spec == spec
    assert dataset_spec("digits") == spec


def test_dataset_spec():
    c10 = dataset_spec("cifar10")
    assert (c10.in_channels, c10.image_size, c10.num_classes, c10.augment) == (3, 32, 10, True)
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c10.std == (0.2470, 0.2435, 0.2616)
    c100 = dataset_spec("cifar100")
    assert c100.num_classes == 100 and c100.mean == (0.5071, 0.4865, 0.4409) and c100.std == (0.2673, 0.2564, 0.2762)
    with pytest.raises(DataError, match="digits"):
        dataset_spec("imagenet")


def test_digits_splits_partition_data_and_are_stratified(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    full = Split(
        x=torch.from_numpy((bunch.data / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8),
        y=torch.from_numpy(bunch.target.astype(np.int64)),
    )
    # train + val + test is exactly the full data set as a multiset, so the splits are disjoint.
    assert _row_counter(digits.train, digits.val, digits.test) == _row_counter(full)
    overall = torch.bincount(full.y, minlength=10).double() / len(full)
    for s in (digits.train, digits.val, digits.test):
        counts = torch.bincount(s.y, minlength=10).double()
        assert torch.all((counts - overall * len(s)).abs() <= 1.0 + 1e-9), counts


def test_digits_val_seeded(digits):
    again = load_dataset("digits", val_fraction=0.1, seed=0)
    other = load_dataset("digits", val_fraction=0.1, seed=1)
    assert torch.equal(again.val.x, digits.val.x) and torch.equal(again.val.y, digits.val.y)
    assert torch.equal(again.train.x, digits.train.x)
    assert not torch.equal(other.val.x, digits.val.x)
    # The train/test split is fixed, whatever the seed.
    assert torch.equal(other.test.x, digits.test.x) and torch.equal(other.test.y, digits.test.y)
    assert _row_counter(other.train, other.val) == _row_counter(digits.train, digits.val)


def test_digits_subset_and_no_val():
    ds = load_dataset("digits", subset=100, val_fraction=0.2, seed=3)
    assert len(ds.train) == 80 and len(ds.val) == 20 and len(ds.test) == 100
    assert torch.bincount(ds.test.y, minlength=10).min() >= 9
    assert torch.bincount(ds.val.y, minlength=10).min() >= 1
    no_val = load_dataset("digits", subset=50, val_fraction=0.0)
    assert no_val.val is None and len(no_val.train) == 50 and len(no_val.test) == 50
    big = load_dataset("digits", subset=10_000, val_fraction=0.0)
    assert len(big.train) == 1437 and len(big.test) == 360


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "mnist"}, "cifar100"),
        ({"name": "digits", "subset": 5}, "subset"),
        ({"name": "cifar100", "subset": 50}, "subset"),
        ({"name": "digits", "subset": True}, "subset"),
        ({"name": "digits", "val_fraction": 1.0}, "val_fraction"),
        ({"name": "digits", "val_fraction": -0.1}, "val_fraction"),
        ({"name": "digits", "val_fraction": float("nan")}, "val_fraction"),
        ({"name": "cifar10"}, "root"),
    ],
)
def test_bad_arguments(kwargs, field):
    name = kwargs.pop("name")
    with pytest.raises(DataError, match=field) as info:
        load_dataset(name, **kwargs)
    assert "\n" not in str(info.value)


def test_stratified_subset():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = stratified_subset(y, 10, seed=0)
    assert idx.dtype == torch.int64 and len(idx) == 10 and len(set(idx.tolist())) == 10
    assert torch.bincount(y[idx]).tolist() == [5, 3, 2]
    assert torch.equal(idx, stratified_subset(y, 10, seed=0))
    assert not torch.equal(idx, stratified_subset(y, 10, seed=1))
    assert torch.equal(stratified_subset(y, 500, seed=0), torch.arange(100))
    # Every class is represented once n reaches the number of classes, even a rare one.
    rare = torch.tensor([0] * 97 + [1, 2, 3])
    assert set(rare[stratified_subset(rare, 4, seed=0)].tolist()) == {0, 1, 2, 3}


# --------------------------------------------------------------------------- fake CIFAR


def test_cifar10_roundtrip(fake10):
    ds = load_dataset("cifar10", root=fake10.directory.parent, val_fraction=0.0)
    assert ds.spec == dataset_spec("cifar10")
    assert ds.spec.in_channels == 3 and ds.spec.image_size == 32 and ds.spec.num_classes == 10 and ds.spec.augment
    assert ds.spec.mean == (0.4914, 0.4822, 0.4465) and ds.spec.std == (0.2470, 0.2435, 0.2616)
    assert ds.val is None
    assert ds.train.x.shape == (100, 3, 32, 32) and ds.test.x.shape == (20, 3, 32, 32)
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    np.testing.assert_array_equal(_to_uint8_rows(ds.train), fake10.train_x)
    np.testing.assert_array_equal(ds.train.y.numpy(), fake10.train_y)
    np.testing.assert_array_equal(_to_uint8_rows(ds.test), fake10.test_x)
    np.testing.assert_array_equal(ds.test.y.numpy(), fake10.test_y)
    # Planes are row-major: pixel (c, h, w) is byte c*1024 + h*32 + w.
    assert ds.train.x[3, 2, 5, 7] == pytest.approx(fake10.train_x[3, 2 * 1024 + 5 * 32 + 7] / 255.0)
    # The data directory itself is accepted as root too.
    direct = load_dataset("cifar10", root=fake10.directory, val_fraction=0.0)
    assert torch.equal(direct.train.x, ds.train.x)


def test_cifar10_val_and_subset(fake10):
    ds = load_dataset("cifar10", root=fake10.directory.parent, val_fraction=0.2, seed=0, subset=50)
    assert len(ds.train) == 40 and len(ds.val) == 10 and len(ds.test) == 20
    assert torch.bincount(ds.val.y, minlength=10).tolist() == [1] * 10
    assert not (_row_counter(ds.train).keys() & _row_counter(ds.val).keys())


def test_cifar100_roundtrip(fake100):
    ds = load_dataset("cifar100", root=fake100.directory.parent, val_fraction=0.0)
    assert ds.spec.num_classes == 100 and ds.spec.mean == (0.5071, 0.4865, 0.4409)
    assert ds.train.x.shape == (200, 3, 32, 32) and ds.test.x.shape == (100, 3, 32, 32)
    np.testing.assert_array_equal(_to_uint8_rows(ds.train), fake100.train_x)
    np.testing.assert_array_equal(ds.train.y.numpy(), fake100.train_y)
    np.testing.assert_array_equal(_to_uint8_rows(ds.test), fake100.test_x)
    np.testing.assert_array_equal(ds.test.y.numpy(), fake100.test_y)
    with_val = load_dataset("cifar100", root=fake100.directory.parent, val_fraction=0.5, seed=2)
    assert len(with_val.train) == 100 and len(with_val.val) == 100


# --------------------------------------------------------------------------- errors


def _dump(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def test_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="--download") as info:
        load_dataset("cifar10", root=missing)
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="--download") as info:
        load_dataset("cifar100", root=empty)
    assert str(empty) in str(info.value)


def test_missing_file(fake10):
    (fake10.directory / "test_batch").unlink()
    with pytest.raises(DataError, match="--download") as info:
        load_dataset("cifar10", root=fake10.directory.parent)
    assert str(fake10.directory / "test_batch") in str(info.value)


def test_truncated_file(fake10):
    path = fake10.directory / "data_batch_3"
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="data_batch_3") as info:
        load_dataset("cifar10", root=fake10.directory.parent)
    assert "\n" not in str(info.value)


def test_garbage_file(fake10):
    (fake10.directory / "data_batch_2").write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match="data_batch_2"):
        load_dataset("cifar10", root=fake10.directory.parent)


def test_wrong_data_shape(fake10):
    _dump(fake10.directory / "data_batch_1", {b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10})
    with pytest.raises(DataError, match=r"data_batch_1.*shape \(10, 100\)"):
        load_dataset("cifar10", root=fake10.directory.parent)


def test_wrong_dtype_and_length(fake10):
    _dump(fake10.directory / "data_batch_1", {b"data": np.zeros((10, 3072), np.float32), b"labels": [0] * 10})
    with pytest.raises(DataError, match=r"data_batch_1.*float32"):
        load_dataset("cifar10", root=fake10.directory.parent)
    _dump(fake10.directory / "data_batch_1", {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9})
    with pytest.raises(DataError, match=r"data_batch_1"):
        load_dataset("cifar10", root=fake10.directory.parent)


def test_label_out_of_range(fake10):
    _dump(fake10.directory / "test_batch", {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 10, 2]})
    with pytest.raises(DataError, match=r"test_batch.*label 10"):
        load_dataset("cifar10", root=fake10.directory.parent)


def test_missing_key_and_not_a_dict(fake10, fake100):
    _dump(fake10.directory / "data_batch_4", {b"data": np.zeros((3, 3072), np.uint8)})
    with pytest.raises(DataError, match=r"data_batch_4.*b'labels'"):
        load_dataset("cifar10", root=fake10.directory.parent)
    _dump(fake100.directory / "train", [1, 2, 3])
    with pytest.raises(DataError, match=r"train.*dict"):
        load_dataset("cifar100", root=fake100.directory.parent)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(fake10, tmp_path):
    marker = tmp_path / "pwned"
    _dump(fake10.directory / "data_batch_1", {b"data": _Evil(marker), b"labels": [0]})
    with pytest.raises(DataError, match=r"data_batch_1: refusing to unpickle (posix|nt|os)\.system"):
        load_dataset("cifar10", root=fake10.directory.parent)
    assert not marker.exists()


def test_object_arrays_are_refused(fake10):
    _dump(fake10.directory / "batches.meta", {b"label_names": np.array([b"a"] * 10, dtype=object)})
    with pytest.raises(DataError, match=r"batches\.meta"):
        load_dataset("cifar10", root=fake10.directory.parent)


# --------------------------------------------------------------------------- download


def test_download_and_load(fake10, http_dir, tmp_path, monkeypatch):
    served, base = http_dir
    md5 = fx.make_cifar_tarball(fake10.directory, served / "cifar-10-python.tar.gz")
    url = f"{base}/cifar-10-python.tar.gz"

    root = tmp_path / "dl"
    directory = download_cifar("cifar10", root, url=url, md5=md5)
    assert directory == root / "cifar-10-batches-py"
    assert (directory / "data_batch_5").is_file()
    assert not list(root.glob("*.part"))

    root2 = tmp_path / "dl2"
    src = data.CIFAR_SOURCES["cifar10"]
    monkeypatch.setitem(data.CIFAR_SOURCES, "cifar10", dataclasses.replace(src, url=url, md5=md5))
    ds = load_dataset("cifar10", root=root2, download=True, val_fraction=0.0)
    np.testing.assert_array_equal(_to_uint8_rows(ds.train), fake10.train_x)
    np.testing.assert_array_equal(ds.test.y.numpy(), fake10.test_y)
    # Already there: no second download needed (the server is not even asked).
    monkeypatch.setitem(data.CIFAR_SOURCES, "cifar10", dataclasses.replace(src, url=f"{base}/missing.tar.gz", md5=md5))
    again = load_dataset("cifar10", root=root2, download=True, val_fraction=0.0)
    assert torch.equal(again.train.x, ds.train.x)


def test_download_bad_md5(fake10, http_dir, tmp_path):
    served, base = http_dir
    md5 = fx.make_cifar_tarball(fake10.directory, served / "c10.tar.gz")
    url = f"{base}/c10.tar.gz"
    root = tmp_path / "dl"
    wrong = "0" * 32
    with pytest.raises(DataError, match="MD5") as info:
        download_cifar("cifar10", root, url=url, md5=wrong)
    msg = str(info.value)
    assert url in msg and wrong in msg and md5 in msg
    assert list(root.iterdir()) == []


def test_download_http_error(http_dir, tmp_path):
    _, base = http_dir
    url = f"{base}/does-not-exist.tar.gz"
    with pytest.raises(DataError, match="does-not-exist"):
        download_cifar("cifar10", tmp_path / "dl", url=url, md5="0" * 32)
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_rejects_unsafe_archive(http_dir, tmp_path):
    served, base = http_dir
    archive = served / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"owned"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "dl" / "inner"
    with pytest.raises(DataError, match="unsafe"):
        download_cifar("cifar10", root, url=f"{base}/evil.tar.gz", md5=md5)
    assert not (tmp_path / "dl" / "escaped.txt").exists()


# --------------------------------------------------------------------------- real data


def test_real_cifar10_subset():
    directory = REAL_CIFAR / "cifar-10-batches-py"
    if not directory.is_dir():
        pytest.skip(f"real CIFAR-10 subset not present at {directory}")
    ds = load_dataset("cifar10", root=REAL_CIFAR, subset=None, val_fraction=0.1, seed=0)
    assert len(ds.train) + len(ds.val) == 4660 and len(ds.test) == 932
    for s in (ds.train, ds.val, ds.test):
        assert s.x.shape[1:] == (3, 32, 32)
        assert int(s.y.min()) >= 0 and int(s.y.max()) <= 9
        assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0


# --------------------------------------------------------------------------- augmentation


def test_random_crop_flip_shape_and_determinism():
    x = torch.rand(16, 3, 32, 32)
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    b = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    c = random_crop_flip(x, generator=torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert random_crop_flip(x).shape == x.shape


def test_flip_only():
    x = torch.rand(64, 2, 5, 7)
    out = random_crop_flip(x, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert torch.all(same | mirrored)
    assert same.any() and mirrored.any()
    assert torch.equal(random_crop_flip(x, padding=0, flip=False), x)


def test_crops_are_windows_of_padded_image():
    pad = 2
    x = torch.rand(12, 3, 6, 6) + 0.1  # strictly positive, so zero padding is recognisable
    out = random_crop_flip(x, padding=pad, flip=True, generator=torch.Generator().manual_seed(1))
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = set()
    for i in range(x.shape[0]):
        found = False
        for oy in range(2 * pad + 1):
            for ox in range(2 * pad + 1):
                window = padded[i, :, oy : oy + 6, ox : ox + 6]
                if torch.equal(out[i], window) or torch.equal(out[i], window.flip(2)):
                    found = True
                    offsets.add((oy, ox))
        assert found, f"image {i} is not a (mirrored) window of its padded input"
    assert len(offsets) > 1


# --------------------------------------------------------------------------- batching


def _indexed_split(n):
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return Split(x=x, y=torch.arange(n))


def test_iterate_batches_shuffle_covers_all():
    split = _indexed_split(23)
    batches = list(iterate_batches(split, 5, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5, 3]
    seen = torch.cat([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(23))
    assert seen.tolist() != list(range(23))
    for xb, yb in batches:
        assert torch.equal(xb[:, 0, 0, 0].long(), yb)
    again = list(iterate_batches(split, 5, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(torch.cat([yb for _, yb in again]), seen)


def test_iterate_batches_in_order_and_drop_last():
    split = _indexed_split(10)
    batches = list(iterate_batches(split, 4, shuffle=False))
    assert [yb.tolist() for _, yb in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert torch.equal(batches[1][0], split.x[4:8])
    dropped = list(iterate_batches(split, 4, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(1)))
    assert [len(yb) for _, yb in dropped] == [4, 4]
    with pytest.raises(ValueError):
        list(iterate_batches(split, 0, shuffle=False))


def test_split_len_and_to():
    split = _indexed_split(3)
    assert len(split) == 3
    moved = split.to("cpu")
    assert len(moved) == 3 and moved.x.device.type == "cpu"
    with pytest.raises(DataError):
        Split(x=torch.zeros(2, 1, 2, 2), y=torch.zeros(3, dtype=torch.long))
