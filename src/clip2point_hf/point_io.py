"""Point files, read by our own readers (trimesh has no reader for numpy, PCD or LAS/LAZ files, nor for
ModelNet's comma-separated txt; BENCHMARKS.md, "Reading files"): numpy (``.npy``, ``.npz``), text rows (``.txt``,
``.xyz``, ``.pts``, ``.csv``), PCL's ``.pcd`` (with its LZF decoder) and LAS/LAZ lidar files (through the
optional ``laspy``). Each reader gives the file's points as stored, every column; ``point_files.read_point_cloud``
keeps x, y, z. A lidar file, often millions of points, is checked and opened here and read later, a seeded subset
at a time (:class:`LidarFile`).
"""

from __future__ import annotations

import importlib
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError, first_line
from .mesh_io import read_file_bytes

__all__ = [
    "LAS_CHUNK_POINTS",
    "LidarFile",
    "lzf_decompress",
    "read_las",
    "read_numpy",
    "read_pcd",
    "read_text",
]


def read_numpy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file, or of a ``.npz`` file's ``points`` (``xyz``, ``data``, ``pc``; or its only) array."""
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


def read_text(path: Path) -> np.ndarray:
    """Rows of numbers, separated by whitespace or commas; ``#`` starts a comment."""
    text = read_file_bytes(path).decode("utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    try:
        return np.loadtxt(text.splitlines(), delimiter="," if "," in first else None, ndmin=2, comments="#")
    except ValueError as error:
        raise DatasetFormatError(path, f"cannot parse the text as rows of numbers ({error})") from None


# ------------------------------------------------------------------------------------------------------ PCD

_PCD_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    **{(t, n): f"<{t.lower()}{n}" for t in "IU" for n in (1, 2, 4, 8)},
}


def read_pcd(path: Path) -> np.ndarray:
    """x, y, z of a PCL point-cloud file (DATA ascii, binary or binary_compressed); NaN points, which
    organised clouds (HEIGHT > 1) use for missing returns, are dropped. VIEWPOINT is not applied (PCL's
    readers do not apply it either)."""
    data = read_file_bytes(path)
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

#: Points decoded at a time: memory stays bounded however many points a lidar file holds.
LAS_CHUNK_POINTS = 1_000_000
#: Bytes of the public header by minor version (LAS 1.0-1.2: 227); a VLR header; the LASzip VLR's key.
_LAS_HEADER_SIZES = {3: 235, 4: 375, 5: 393}
_VLR_HEADER_SIZE = 54
_LASZIP_VLR = (b"laszip encoded", 22204)
_VARIABLE_CHUNKS = 0xFFFFFFFF


@dataclass(frozen=True)
class LidarFile:
    """A LAS/LAZ file whose header agrees with its size, opened but not yet read: it can hold more points than
    memory should, so :meth:`sample` decodes it in chunks and keeps only the points it returns."""

    path: Path
    point_count: int
    compressed: bool

    def sample(self, num_points: int, rng: np.random.Generator) -> np.ndarray:
        """Real x, y, z (float64, scaled and offset as the file says) of ``num_points`` of its points, chosen
        without replacement by ``rng`` and kept in file order; every point when it has no more."""
        laspy = _optional("laspy", "las", self.path)
        total = self.point_count
        keep = None
        if total > num_points:
            keep = np.sort(rng.choice(total, num_points, replace=False))
        parts, start = [], 0
        try:
            with laspy.open(self.path, read_evlrs=False) as reader:  # EVLRs hold no points
                for chunk in reader.chunk_iterator(LAS_CHUNK_POINTS):
                    rows = (
                        slice(None)
                        if keep is None
                        else keep[(keep >= start) & (keep < start + len(chunk))] - start
                    )
                    parts.append(
                        np.stack([np.asarray(chunk.x), np.asarray(chunk.y), np.asarray(chunk.z)], 1)[rows]
                    )
                    start += len(chunk)
        except (laspy.LaspyException, ValueError, RuntimeError, EOFError, struct.error) as error:
            problem = "truncated or corrupt LAZ point data" if self.compressed else "cannot read as LAS/LAZ"
            raise DatasetFormatError(self.path, f"{problem} ({first_line(error)})") from None
        if start < total:
            raise DatasetFormatError(
                self.path, f"truncated LAS file: the header declares {total} points, {start} read"
            )
        return np.concatenate(parts) if parts else np.zeros((0, 3))


def read_las(path: Path) -> LidarFile:
    """Check a LAS/LAZ file's header against the file and open it through laspy (``pip install
    'clip2point-hf[las]'``; LAZ needs its lazrs backend): one line naming the file when it cannot be read."""
    laspy = _optional("laspy", "las", path)
    point_count, compressed = _las_layout(path)
    if compressed and not laspy.LazBackend.detect_available():
        raise DatasetFormatError(path, "reading .laz files needs lazrs: pip install 'clip2point-hf[las]'")
    return LidarFile(path, point_count, compressed)


def _las_layout(path: Path) -> tuple[int, bool]:
    """``(point count, compressed)`` once the header's sizes, offsets and counts are known to fit in the file.

    laspy trusts them: a VLR count of 0xFFFFFFF0 makes it read empty VLRs until memory runs out, a file cut
    short fails deep in numpy or lazrs. Only the header and the VLR headers are read here (a few kB).
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            header = file.read(max(_LAS_HEADER_SIZES.values()))
            if header[:4] != b"LASF":
                raise DatasetFormatError(path, "cannot read as LAS/LAZ: it does not start with 'LASF'")
            minor = header[25] if len(header) > 25 else 0
            needed = _LAS_HEADER_SIZES.get(min(minor, 5), 227)
            if len(header) < needed:
                raise DatasetFormatError(
                    path, f"truncated LAS file: {size} bytes, a LAS 1.{minor} header alone has {needed}"
                )
            header_size, point_offset, vlr_count = struct.unpack_from("<HII", header, 94)
            format_id, record_size, point_count = struct.unpack_from("<BHI", header, 104)
            if header_size < needed:
                raise DatasetFormatError(
                    path,
                    f"corrupt LAS header: its size field says {header_size}, a LAS 1.{minor} header has {needed}",
                )
            if minor >= 4:
                (point_count,) = struct.unpack_from("<Q", header, 247)
            if point_count >= 2**62:  # more than any disk holds; numpy's sampling needs an int64
                raise DatasetFormatError(path, f"corrupt LAS header: it declares {point_count} points")
            if not header_size <= point_offset <= size:
                raise DatasetFormatError(
                    path,
                    f"truncated or corrupt LAS file: its points start at byte {point_offset}, "
                    f"the header ends at {header_size} and the file at {size}",
                )
            chunk_size = _las_vlrs(path, file, header_size, point_offset, vlr_count)
            compressed = format_id & 0xC0 == 0x80  # bit 7 without bit 6, as laspy reads it
            if compressed and chunk_size is not None:
                _laz_chunk_table(path, file, size, point_offset, point_count, chunk_size)
    except OSError as error:
        raise DatasetFormatError(path, f"cannot read file ({error.strerror or error})") from None
    if not compressed and point_offset + point_count * record_size > size:
        raise DatasetFormatError(
            path,
            f"truncated LAS file: the header declares {point_count} points of {record_size} bytes "
            f"({point_count * record_size} bytes from byte {point_offset}), the file has {size - point_offset}",
        )
    return point_count, compressed


def _las_vlrs(path: Path, file, header_size: int, point_offset: int, vlr_count: int) -> int | None:
    """Walk the VLR headers between the header and the points; the LASzip chunk size (points per chunk) of
    a chunked LAZ file, else None."""
    room = point_offset - header_size
    if vlr_count * _VLR_HEADER_SIZE > room:
        raise DatasetFormatError(
            path,
            f"corrupt LAS header: it declares {vlr_count} VLRs, the {room} bytes before the points "
            f"hold at most {room // _VLR_HEADER_SIZE}",
        )
    chunk_size, position = None, header_size
    for number in range(1, vlr_count + 1):
        file.seek(position)
        vlr = file.read(_VLR_HEADER_SIZE)
        length = struct.unpack_from("<H", vlr, 20)[0]
        if position + _VLR_HEADER_SIZE + length > point_offset:
            raise DatasetFormatError(
                path, f"corrupt LAS header: VLR {number} of {vlr_count} runs past the start of the points"
            )
        if (vlr[2:18].rstrip(b"\0"), struct.unpack_from("<H", vlr, 18)[0]) == _LASZIP_VLR and length >= 16:
            compressor, *_, chunk_size = struct.unpack("<HHBBHII", file.read(16))
            chunk_size = chunk_size if compressor in (2, 3) else None  # 1: pointwise, no chunk table
        position += _VLR_HEADER_SIZE + length
    return chunk_size


def _laz_chunk_table(
    path: Path, file, size: int, point_offset: int, point_count: int, chunk_size: int
) -> None:
    """A chunked LAZ file ends in its chunk table, whose offset opens the point data: a file cut short has
    lost it; a table of n chunks of a fixed size holds at most n * size points."""
    file.seek(point_offset)
    head = file.read(8)
    (table,) = struct.unpack("<q", head) if len(head) == 8 else (size,)
    if table == -1:  # a writer that could not seek back leaves no offset
        return
    if not point_offset + 8 <= table <= size - 8:
        raise DatasetFormatError(
            path, f"truncated LAZ file: its chunk table should be at byte {table}, the file has {size} bytes"
        )
    file.seek(table + 4)
    (chunks,) = struct.unpack("<I", file.read(4))
    if chunk_size != _VARIABLE_CHUNKS and point_count > chunks * chunk_size:
        raise DatasetFormatError(
            path,
            f"corrupt LAZ header: it declares {point_count} points, its {chunks} chunks of {chunk_size} "
            f"hold at most {chunks * chunk_size}",
        )


def _optional(module: str, extra: str, path: Path):
    """Import an optional dependency, or one line naming the file and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DatasetFormatError(
            path, f"reading {path.suffix} files needs {module}: pip install 'clip2point-hf[{extra}]'"
        ) from None
