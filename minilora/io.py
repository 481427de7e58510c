"""File helpers for checkpoints and adapters: .npz arrays and .json metadata, written atomically.

Why atomic? A training run that is killed (Ctrl-C, out of memory, power cut) while it writes a
checkpoint must not destroy the previous checkpoint. Every writer here follows the same recipe:

    1. write the whole payload to a temporary file in the *same directory* as the target
       (same file system, so the final rename is atomic);
    2. flush Python's buffer and ``os.fsync`` so the bytes are on disk, not only in the page cache;
    3. ``os.replace(tmp, target)``: readers see either the old file or the new one, never half of one;
    4. on any exception, delete the temporary file and re-raise; the old target is untouched.

Arrays are stored with ``np.savez`` (uncompressed zip of .npy files) and read back with
``allow_pickle=False``: a checkpoint can never execute code when it is loaded.

Only numpy and the standard library are used.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "save_json_atomic",
    "load_json",
    "save_npz_atomic",
    "load_npz",
    "fingerprint",
    "ensure_writable_dir",
]

# np.savez(file, *args, allow_pickle=..., **kwds): these keyword names cannot be array names.
_RESERVED_NPZ_KEYS = frozenset({"file", "allow_pickle"})


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: the file holds either its old content or all of ``data``.

    Args:
        path: target file. Its directory must exist. An existing file is replaced.
        data: the complete new content (bytes, bytearray or memoryview).

    The bytes go to a temporary file ``.<name>.<random>.tmp`` in the same directory, are flushed
    and fsync'ed, and the temporary file is renamed over ``path`` with ``os.replace``. The new file
    keeps the permission bits of the file it replaces (0o644 for a new file).

    Raises:
        FileNotFoundError: the directory of ``path`` does not exist.
        TypeError: ``data`` is not bytes-like.
        OSError: the write, fsync or rename failed. In every failure case the temporary file is
            removed and the previous content of ``path`` (if any) is left intact.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes: data must be bytes, got {type(data).__name__}")
    target = Path(path)
    directory = target.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"atomic_write_bytes: directory {str(directory)!r} does not exist")
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    tmp = tempfile.NamedTemporaryFile(
        mode="wb", delete=False, dir=directory, prefix=f".{target.name}.", suffix=".tmp"
    )
    tmp_name = tmp.name
    try:
        with tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:  # KeyboardInterrupt included: never leave a stray temp file behind
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Best effort: make the rename itself durable (POSIX). Silently skipped where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Serialize ``obj`` as JSON (sorted keys, indent 2, trailing newline, UTF-8) and write it atomically.

    Args:
        path: target file (replaced if it exists).
        obj: anything ``json.dumps`` accepts (dicts, lists, str, int, float, bool, None).

    Raises:
        TypeError: ``obj`` is not JSON-serializable (raised before anything touches the disk).
        OSError: see :func:`atomic_write_bytes`.
    """
    text = json.dumps(obj, sort_keys=True, indent=2) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`save_json_atomic` (or any UTF-8 JSON file).

    Returns:
        the decoded Python object.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not valid UTF-8 JSON; the message names the file and the position.
    """
    p = Path(path)
    raw = p.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{str(p)!r} is not a valid JSON file (not UTF-8 text): {e}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(p)!r} is not a valid JSON file: {e}") from e


def _check_arrays(arrays: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """Validate names and convert values to ndarrays (no copy for ndarrays)."""
    if not isinstance(arrays, Mapping):
        raise TypeError(f"{where}: arrays must be a dict name -> ndarray, got {type(arrays).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: array names must be non-empty strings, got {key!r}")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ValueError(
                f"{where}: array {key!r} has dtype object, which would need pickle; "
                "only plain numeric/bool/string arrays can be stored"
            )
        out[key] = arr
    return out


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """Save a dict of arrays as an uncompressed ``.npz`` file, atomically, without pickle.

    Args:
        path: target file. Note that ``np.savez`` conventions do not apply: the name is used as
            given (no ``.npz`` suffix is appended).
        arrays: name -> array-like. Any shape (0-d included) and any non-object dtype; values are
            stored bit-exactly (dtype, shape and byte order preserved).

    Raises:
        ValueError: a name is empty or reserved (``"file"``, ``"allow_pickle"``: keyword names of
            ``np.savez``), or an array has dtype object.
        TypeError: ``arrays`` is not a mapping.
        OSError: see :func:`atomic_write_bytes`; the previous file stays intact.
    """
    checked = _check_arrays(arrays, "save_npz_atomic")
    reserved = sorted(_RESERVED_NPZ_KEYS.intersection(checked))
    if reserved:
        raise ValueError(f"save_npz_atomic: array names {reserved} are reserved by np.savez; rename them")
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **checked)
    atomic_write_bytes(path, buf.getbuffer())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file eagerly, with ``allow_pickle=False``.

    Args:
        path: an ``.npz`` file, e.g. one written by :func:`save_npz_atomic`.

    Returns:
        dict name -> ndarray (in the file's order); the file is closed on return.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: ``"<path> is not a readable .npz file (truncated or corrupted?): <reason>"`` for a
            truncated or corrupted file, a non-zip file, a plain ``.npy`` file, or an array that would
            need pickle to load.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such .npz file: {str(p)!r}")
    if p.is_dir():
        raise IsADirectoryError(f"expected an .npz file, got a directory: {str(p)!r}")

    def bad(reason: object) -> ValueError:
        return ValueError(f"{str(p)!r} is not a readable .npz file (truncated or corrupted?): {reason}")

    try:
        loaded = np.load(p, allow_pickle=False)
    except (PermissionError, IsADirectoryError):
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise bad(f"{type(e).__name__}: {e}") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise bad("it holds a single .npy array, not an archive of named arrays")
    try:
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise bad(f"{type(e).__name__}: {e}") from e


def fingerprint(arrays: Mapping[str, Any]) -> str:
    """A sha256 hex digest of a dict of arrays: names, dtypes, shapes and raw bytes.

    Used to tell whether a base model changed (an adapter trained on one base model must not be
    applied silently to another). Independent of dict insertion order (keys are sorted); changes if
    any name, dtype (including byte order), shape or single element changes. Every field is
    length-prefixed, so different splits of the same bytes cannot collide.

    Args:
        arrays: name -> array-like (non-object dtype).

    Returns:
        64-character lowercase hex string.

    Raises:
        ValueError / TypeError: as :func:`save_npz_atomic` for invalid names or object arrays.
    """
    checked = _check_arrays(arrays, "fingerprint")
    h = hashlib.sha256()

    def field(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    for key in sorted(checked):
        arr = checked[key]
        field(key.encode("utf-8"))
        field(arr.dtype.str.encode("ascii"))
        field(repr(tuple(int(n) for n in arr.shape)).encode("ascii"))
        field(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def ensure_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Make sure ``path`` is a directory this process can create files in, BEFORE any long work.

    Commands call it for every folder they will write into, so that a bad ``--out`` fails in a
    second with a clear message instead of after the whole training run. The directory (and its
    parents) is created if missing; a probe file is created in it and removed again.

    Args:
        path: the directory to write into later.
        what: how the message names it, e.g. ``"--out"`` or ``"the adapter folder"``.

    Returns:
        the directory as a Path.

    Raises:
        NotADirectoryError: ``path`` (or one of its parents) exists and is a file.
        PermissionError / OSError: the directory cannot be created or written; the message names
            ``what``, the path and the reason.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{what} {str(p)!r} is a file, not a directory")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{what} {str(p)!r} cannot be created: {str(parent)!r} is a file")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".minilora-write-test.", suffix=".tmp"):
            pass
    except OSError as e:
        raise type(e)(f"{what} {str(p)!r} cannot be written: {e.strerror or e}") from None
    return p
