"""Tests for minilora.io: atomic writes, .npz/.json round trips, clear errors, fingerprints."""
import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minilora import io as mio

DTYPES = [np.float32, np.float64, np.int64]


def _array(dtype):
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


array_dicts = st.dictionaries(
    keys=st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True).filter(lambda k: k != "file"),
    values=st.sampled_from(DTYPES).flatmap(_array),
    max_size=4,
)


def _bit_equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _write_v1(path):
    v1 = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "step": np.int64(7)}
    mio.save_npz_atomic(path, v1)
    return v1


# ------------------------------------------------------------------------------------------ npz


@given(array_dicts)
def test_npz_round_trip_bit_exact(arrays):
    # NaNs, infinities, -0.0 and 0-d/empty arrays included: compare raw bytes, not values.
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.npz")
        mio.save_npz_atomic(path, arrays)
        loaded = mio.load_npz(path)
        assert set(loaded) == set(arrays)
        for key, arr in arrays.items():
            assert _bit_equal(loaded[key], np.asarray(arr)), key
        assert mio.fingerprint(loaded) == mio.fingerprint(arrays)
        assert os.listdir(d) == ["model.npz"]


def test_npz_overwrite_and_preserve_permissions(tmp_path):
    path = tmp_path / "a.npz"
    _write_v1(path)
    os.chmod(path, 0o640)
    mio.save_npz_atomic(path, {"x": np.ones(2)})
    assert list(mio.load_npz(path)) == ["x"]
    assert os.stat(path).st_mode & 0o777 == 0o640


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_npz_raises_clear_value_error(tmp_path, fraction):
    path = tmp_path / "ckpt.npz"
    _write_v1(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match=r"ckpt\.npz.* is not a readable \.npz file \(truncated or corrupted\?\)"):
        mio.load_npz(path)


def test_corrupted_payload_is_detected(tmp_path):
    path = tmp_path / "ckpt.npz"
    v1 = _write_v1(path)
    data = bytearray(path.read_bytes())
    at = bytes(data).index(v1["w"].tobytes()) + 17  # inside the raw bytes of "w": the zip CRC catches it
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a readable .npz file"):
        mio.load_npz(path)


@pytest.mark.parametrize("payload", [b"", b"garbage" * 50, b"PK\x03\x04garbage", b"\x80\x04junk"])
def test_garbage_bytes_raise_value_error(tmp_path, payload):
    path = tmp_path / "junk.npz"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="junk.npz.*not a readable .npz file"):
        mio.load_npz(path)


def test_plain_npy_file_is_rejected(tmp_path):
    path = tmp_path / "single.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match="not a readable .npz file"):
        mio.load_npz(path)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        mio.load_npz(tmp_path / "nowhere.npz")


def test_pickled_object_arrays_refused(tmp_path):
    with pytest.raises(ValueError, match="object"):
        mio.save_npz_atomic(tmp_path / "o.npz", {"o": np.array([{"a": 1}], dtype=object)})
    path = tmp_path / "evil.npz"
    np.savez(path, o=np.array([{"a": 1}], dtype=object))  # written by someone else, with pickle
    with pytest.raises(ValueError, match="not a readable .npz file"):
        mio.load_npz(path)


def test_reserved_and_invalid_names(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        mio.save_npz_atomic(tmp_path / "r.npz", {"file": np.zeros(1)})
    with pytest.raises(ValueError, match="non-empty strings"):
        mio.save_npz_atomic(tmp_path / "r.npz", {"": np.zeros(1)})
    assert not (tmp_path / "r.npz").exists()


# ------------------------------------------------------------------------- interrupted writes


def _assert_v1_intact(path, v1):
    loaded = mio.load_npz(path)
    assert set(loaded) == set(v1)
    for k in v1:
        assert _bit_equal(loaded[k], np.asarray(v1[k]))
    assert sorted(os.listdir(path.parent)) == [path.name], "a temporary file was left behind"


def test_interrupted_savez_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    v1 = _write_v1(path)
    real_savez = np.savez

    def half_savez(file, *args, **kwds):
        real_savez(file, *args, **kwds)
        file.truncate(10)  # half-written archive, then the "crash"
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", half_savez)
    with pytest.raises(KeyboardInterrupt):
        mio.save_npz_atomic(path, {"w": np.zeros(1000)})
    _assert_v1_intact(path, v1)


@pytest.mark.parametrize("where", ["replace", "fsync", "write"])
def test_failure_during_atomic_write_cleans_up(tmp_path, monkeypatch, where):
    path = tmp_path / "model.npz"
    v1 = _write_v1(path)

    def boom(*args, **kwargs):
        raise OSError(f"simulated failure in {where}")

    if where == "write":
        real_ntf = tempfile.NamedTemporaryFile

        def ntf(*args, **kwargs):
            f = real_ntf(*args, **kwargs)
            real_write = f.write

            def partial_write(data):
                real_write(bytes(data)[:5])
                raise OSError("simulated failure in write (disk full)")

            f.write = partial_write
            return f

        monkeypatch.setattr(tempfile, "NamedTemporaryFile", ntf)
    else:
        monkeypatch.setattr(os, where, boom)
    with pytest.raises(OSError, match="simulated failure"):
        mio.save_npz_atomic(path, {"w": np.zeros(1000)})
    monkeypatch.undo()
    _assert_v1_intact(path, v1)


def test_atomic_write_bytes_basics(tmp_path):
    path = tmp_path / "blob.bin"
    mio.atomic_write_bytes(path, b"one")
    mio.atomic_write_bytes(str(path), bytearray(b"two"))
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["blob.bin"]
    with pytest.raises(TypeError):
        mio.atomic_write_bytes(path, "not bytes")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mio.atomic_write_bytes(tmp_path / "missing_dir" / "x.bin", b"x")


# ----------------------------------------------------------------------------------------- json


def test_json_round_trip_sorted_and_indented(tmp_path):
    path = tmp_path / "config.json"
    obj = {"r": 8, "lora_alpha": 16.0, "target_modules": ["c_attn", "c_proj"], "note": "héllo", "x": None}
    mio.save_json_atomic(path, obj)
    assert mio.load_json(path) == obj
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(obj, sort_keys=True, indent=2) + "\n"
    assert text.index('"lora_alpha"') < text.index('"r"')


def test_json_errors(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"r": 8,', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json.*not a valid JSON file"):
        mio.load_json(path)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="broken.json"):
        mio.load_json(path)
    with pytest.raises(FileNotFoundError):
        mio.load_json(tmp_path / "absent.json")
    good = tmp_path / "good.json"
    mio.save_json_atomic(good, {"a": 1})
    with pytest.raises(TypeError):
        mio.save_json_atomic(good, {"a": object()})
    assert mio.load_json(good) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["broken.json", "good.json"]


# ---------------------------------------------------------------------------------- fingerprint


def test_fingerprint_sensitive_to_one_element_and_stable_under_key_order():
    rng = np.random.default_rng(0)
    a = {"transformer.wte.weight": rng.standard_normal((16, 8)).astype(np.float32),
         "lm_head.bias": np.zeros(16, dtype=np.float32)}
    fp = mio.fingerprint(a)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert mio.fingerprint(dict(reversed(list(a.items())))) == fp
    assert mio.fingerprint({k: v.copy() for k, v in a.items()}) == fp
    b = {k: v.copy() for k, v in a.items()}
    b["transformer.wte.weight"][3, 5] = np.nextafter(b["transformer.wte.weight"][3, 5], np.float32(np.inf))
    assert mio.fingerprint(b) != fp


def test_fingerprint_sees_dtype_shape_and_names():
    x = np.arange(6, dtype=np.int64)
    base = mio.fingerprint({"x": x})
    assert mio.fingerprint({"x": x.reshape(2, 3)}) != base          # same bytes, other shape
    assert mio.fingerprint({"x": x.view(np.float64)}) != base        # same bytes, other dtype
    assert mio.fingerprint({"y": x}) != base                          # other name
    assert mio.fingerprint({"x": x[:3], "x2": x[3:]}) != mio.fingerprint({"x": x})
    assert mio.fingerprint({"x": np.asfortranarray(x.reshape(2, 3))}) == mio.fingerprint({"x": x.reshape(2, 3)})
