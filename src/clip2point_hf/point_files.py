"""One point cloud from one file, whatever its type: what the pipeline and the command line read.

Meshes (`.obj`, `.off`, `.stl`, `.glb`/`.gltf`, `.ply` with faces) are sampled on their surface
(area-weighted, seeded by the file name); point files (`.ply` without faces, `.npy`, `.npz`,
`.txt`/`.xyz`/`.pts`/`.csv`, PCL's `.pcd`) are returned as stored, extra columns (normals, colours)
dropped; LAS/LAZ lidar files (optional `laspy`), often millions of points, are sub-sampled to
`num_points` with the same seeded generator.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError
from .mesh_io import MESH_EXTENSIONS, _finish, _read_bytes, read_mesh, read_ply_elements, sample_surface
from .seeding import seeded_rng

MESH_FILES = tuple(ext for ext in MESH_EXTENSIONS if ext != ".ply")  # always surfaces (a .ply may be points)
TEXT_FILES = (".txt", ".xyz", ".pts", ".csv")
LIDAR_FILES = (".las", ".laz")
POINT_FILE_TYPES = (*MESH_EXTENSIONS, ".npy", ".npz", *TEXT_FILES, ".pcd", *LIDAR_FILES)


def read_point_cloud(path: str | os.PathLike, num_points: int = 8192, seed: int = 0) -> np.ndarray:
    """Read `path` into a float32 `(N, 3)` array (`num_points` surface samples for meshes)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in POINT_FILE_TYPES:
        raise DatasetFormatError(
            path, f"unsupported file type {ext or '(none)'!r}; expected one of {POINT_FILE_TYPES}"
        )
    if path.is_dir():
        raise DatasetFormatError(path, "is a folder, not a point-cloud or mesh file")
    if not path.is_file():
        raise DatasetFormatError(path, "file not found")
    if ext in MESH_FILES:
        points = _sample(read_mesh(path), path, num_points, seed)
    elif ext == ".ply":
        points = _read_ply(path, num_points, seed)
    elif ext in (".npy", ".npz"):
        points = _read_numpy(path)
    elif ext == ".pcd":
        points = _read_pcd(path)
    elif ext in LIDAR_FILES:
        points = _read_las(path, num_points, seed)
    else:
        points = _read_text(path)
    return _check(points, path)


def _sample(mesh, path: Path, num_points: int, seed: int) -> np.ndarray:
    return sample_surface(mesh, num_points, seeded_rng(seed, path.name), path=path)


def _read_ply(path: Path, num_points: int, seed: int) -> np.ndarray:
    vertices, faces, _ = read_ply_elements(path)
    if faces is None or len(faces) == 0:  # a scan: the vertices are the cloud
        return np.asarray(vertices, dtype=np.float64)
    return _sample(_finish(path, vertices, faces, "PLY"), path, num_points, seed)


def _read_numpy(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetFormatError(path, f"cannot read as a numpy file ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            key = next(
                (k for k in ("points", "xyz", "data", "pc") if k in keys), keys[0] if len(keys) == 1 else None
            )
            if key is None:
                raise DatasetFormatError(path, f"npz file has several arrays {keys} and none named 'points'")
            loaded = loaded[key]
    return loaded


def _read_text(path: Path) -> np.ndarray:
    text = _read_bytes(path).decode("utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    try:
        return np.loadtxt(text.splitlines(), delimiter="," if "," in first else None, ndmin=2, comments="#")
    except ValueError as error:
        raise DatasetFormatError(path, f"cannot parse the text as rows of numbers ({error})") from None


def _optional(module: str, extra: str, path: Path):
    """Import an optional dependency, or one line naming the file and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DatasetFormatError(
            path, f"reading {path.suffix} files needs {module}: pip install 'clip2point-hf[{extra}]'"
        ) from None


# ------------------------------------------------------------------------------------------------------ PCD

_PCD_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    **{(t, n): f"<{t.lower()}{n}" for t in "IU" for n in (1, 2, 4, 8)},
}


def _read_pcd(path: Path) -> np.ndarray:
    """x, y, z of a PCL point-cloud file (DATA ascii, binary or binary_compressed); NaN points, which
    organised clouds (HEIGHT > 1) use for missing returns, are dropped. VIEWPOINT is not applied (PCL's
    readers do not apply it either)."""
    data = _read_bytes(path)
    header, offset = _pcd_header(path, data)
    fields = header["FIELDS"]
    try:
        sizes = [int(v) for v in header["SIZE"]]
        counts = [int(v) for v in header.get("COUNT", ["1"] * len(fields))]
        width, height = int(header["WIDTH"][0]), int(header.get("HEIGHT", ["1"])[0])
        points = int(header.get("POINTS", [width * height])[0])
        types = [t.upper() for t in header["TYPE"]]
    except (KeyError, IndexError, ValueError) as error:
        raise DatasetFormatError(path, f"bad PCD header ({type(error).__name__}: {error})") from None
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise DatasetFormatError(path, "PCD header FIELDS, SIZE, TYPE and COUNT have different lengths")
    unknown = [f"{t}{n}" for t, n in zip(types, sizes, strict=True) if (t, n) not in _PCD_TYPES]
    if unknown:
        raise DatasetFormatError(path, f"PCD header has unknown TYPE/SIZE pairs {unknown} (F4 F8 I1-8 U1-8)")
    dtypes = [np.dtype(_PCD_TYPES[t, n]) for t, n in zip(types, sizes, strict=True)]
    missing = [a for a in "xyz" if a not in fields]
    if missing:
        raise DatasetFormatError(
            path, f"PCD file has no {'/'.join(missing)} field (FIELDS {' '.join(fields)})"
        )
    if points != width * height:
        raise DatasetFormatError(path, f"PCD header POINTS {points} is not WIDTH*HEIGHT {width}*{height}")
    columns = [fields.index(a) for a in "xyz"]
    layout = header["DATA"][0].lower()
    if layout == "ascii":
        xyz = _pcd_ascii(path, data[offset:], points, counts, columns)
    elif layout == "binary":
        record = np.dtype([(f"f{j}", dt, (n,)) for j, (dt, n) in enumerate(zip(dtypes, counts))])
        if offset + record.itemsize * points > len(data):
            raise DatasetFormatError(
                path,
                f"truncated PCD file: {points} points of {record.itemsize} bytes need "
                f"{record.itemsize * points} bytes after the header, it has {len(data) - offset}",
            )
        table = np.frombuffer(data, dtype=record, count=points, offset=offset)
        xyz = np.stack([table[f"f{j}"][:, 0].astype(np.float64) for j in columns], axis=1)
    elif layout == "binary_compressed":
        xyz = _pcd_compressed(path, data[offset:], points, dtypes, counts, columns)
    else:
        raise DatasetFormatError(
            path, f"unknown PCD DATA {layout!r} (expected ascii, binary or binary_compressed)"
        )
    return xyz[np.isfinite(xyz).all(axis=1)]


def _pcd_header(path: Path, data: bytes) -> tuple[dict[str, list[str]], int]:
    """The header's ``{KEY: values}`` and the offset of the data after its DATA line."""
    header: dict[str, list[str]] = {}
    offset = 0
    while "DATA" not in header:
        end = data.find(b"\n", offset)
        if end < 0:
            raise DatasetFormatError(path, "not a PCD file: no DATA line ends the header")
        line = data[offset:end].decode("latin-1").strip()
        offset = end + 1
        if line and not line.startswith("#"):
            key, *values = line.split()
            header[key.upper()] = values
        if len(header) > 16 or offset > 65536:
            raise DatasetFormatError(path, "not a PCD file: no DATA line ends the header")
    if "FIELDS" not in header or not header["DATA"]:
        raise DatasetFormatError(path, "not a PCD file: its header has no FIELDS line")
    return header, offset


def _pcd_ascii(path: Path, body: bytes, points: int, counts: list[int], columns: list[int]) -> np.ndarray:
    width = sum(counts)
    try:
        values = np.array(body.split()[: points * width], dtype=np.float64)
    except ValueError as error:
        raise DatasetFormatError(path, f"corrupt PCD ascii data ({error})") from None
    if len(values) < points * width:
        raise DatasetFormatError(
            path,
            f"truncated PCD file: {points} points of {width} values need {points * width}, it has {len(values)}",
        )
    starts = np.cumsum([0, *counts])
    return values.reshape(points, width)[:, [starts[j] for j in columns]]


def _pcd_compressed(path, body: bytes, points: int, dtypes, counts, columns) -> np.ndarray:
    """binary_compressed: two uint32 sizes, then LZF data that expands to the fields one after another
    (all points' x, then all y, ...)."""
    if len(body) < 8:
        raise DatasetFormatError(path, "truncated PCD file: no compressed sizes after the header")
    packed, unpacked = int.from_bytes(body[:4], "little"), int.from_bytes(body[4:8], "little")
    expected = points * sum(dt.itemsize * n for dt, n in zip(dtypes, counts))
    if unpacked != expected:
        raise DatasetFormatError(
            path, f"PCD compressed data expands to {unpacked} bytes, the header's fields need {expected}"
        )
    if 8 + packed > len(body):
        raise DatasetFormatError(
            path, f"truncated PCD file: {packed} compressed bytes declared, {len(body) - 8} present"
        )
    try:
        raw = lzf_decompress(body[8 : 8 + packed], unpacked)
    except ValueError as error:
        raise DatasetFormatError(path, f"corrupt PCD compressed data ({error})") from None
    starts = np.cumsum([0, *(points * dt.itemsize * n for dt, n in zip(dtypes, counts))])
    return np.stack(
        [
            np.frombuffer(raw, dtypes[j], points * counts[j], int(starts[j])).reshape(points, -1)[:, 0]
            for j in columns
        ],
        axis=1,
    ).astype(np.float64)


def lzf_decompress(data: bytes, size: int) -> bytes:
    """Expand an LZF stream (liblzf's format, as PCL writes it) to exactly ``size`` bytes.

    A control byte below 32 starts a literal run of ``ctrl + 1`` bytes; otherwise its top 3 bits are a
    length (7: add the next byte), plus 2, and its low 5 bits with the next byte an offset back, minus 1.
    About 30 lines, so no dependency (the ``lzf`` package on PyPI is an unmaintained binding).
    """
    out, i, n = bytearray(), 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:
            if i + ctrl + 1 > n:
                raise ValueError(f"a literal run of {ctrl + 1} bytes at byte {i - 1} passes the end")
            out += data[i : i + ctrl + 1]
            i += ctrl + 1
            continue
        length = ctrl >> 5
        if length == 7:
            if i >= n:
                raise ValueError("the stream ends inside a back-reference")
            length += data[i]
            i += 1
        if i >= n:
            raise ValueError("the stream ends inside a back-reference")
        back = ((ctrl & 0x1F) << 8) + data[i] + 1
        i += 1
        length += 2
        start = len(out) - back
        if start < 0:
            raise ValueError(f"a back-reference at byte {i - 2} points {back} bytes back, before the start")
        if back >= length:
            out += out[start : start + length]
        else:  # overlapping: the last `back` bytes repeat
            out += (out[start:] * (length // back + 1))[:length]
        if len(out) > size:
            break
    if len(out) != size:
        raise ValueError(f"LZF data expands to {len(out)} bytes, expected {size}")
    return bytes(out)


# ------------------------------------------------------------------------------------------------- LAS/LAZ


_LAS_CHUNK = 1_000_000  # points decoded at a time


def _read_las(path: Path, num_points: int, seed: int) -> np.ndarray:
    """Real (scaled and offset) x, y, z of a LAS or LAZ file through laspy; more than ``num_points``
    points are sub-sampled without replacement by ``seeded_rng(seed, file name)``, chunk by chunk, so a
    file of many millions of points is never held whole."""
    laspy = _optional("laspy", "las", path)
    try:
        with laspy.open(path) as reader:
            if reader.header.are_points_compressed and not laspy.LazBackend.detect_available():
                raise DatasetFormatError(
                    path, "reading .laz files needs lazrs: pip install 'clip2point-hf[las]'"
                )
            total = int(reader.header.point_count)
            keep = None
            if total > num_points:
                keep = np.sort(seeded_rng(seed, path.name).choice(total, num_points, replace=False))
            parts, start = [], 0
            for chunk in reader.chunk_iterator(_LAS_CHUNK):
                rows = (
                    slice(None)
                    if keep is None
                    else keep[(keep >= start) & (keep < start + len(chunk))] - start
                )
                parts.append(
                    np.stack([np.asarray(chunk.x), np.asarray(chunk.y), np.asarray(chunk.z)], 1)[rows]
                )
                start += len(chunk)
    except laspy.LaspyException as error:
        raise DatasetFormatError(
            path, f"cannot read as LAS/LAZ ({str(error).strip().splitlines()[0]})"
        ) from None
    if start < total:
        raise DatasetFormatError(
            path, f"truncated LAS file: the header declares {total} points, {start} read"
        )
    return np.concatenate(parts) if parts else np.zeros((0, 3))


def _check(points: np.ndarray, path: Path) -> np.ndarray:
    if points.ndim != 2 or points.shape[1] < 3:
        raise DatasetFormatError(path, f"expected an (N, 3+) array of points, got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.number):
        raise DatasetFormatError(path, f"points have non-numeric dtype {points.dtype}")
    points = points[:, :3].astype(np.float32)
    if len(points) == 0:
        raise DatasetFormatError(path, "the file holds no points")
    if not np.isfinite(points).all():
        raise DatasetFormatError(
            path, f"{int((~np.isfinite(points).all(axis=1)).sum())} points have NaN or Inf"
        )
    return points


__all__ = ["POINT_FILE_TYPES", "lzf_decompress", "read_point_cloud"]
