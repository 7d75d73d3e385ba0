"""Mesh files read by our own readers (OFF, OBJ, PLY, STL), the :class:`Mesh` they give, and seeded
area-weighted surface sampling.

Every reader returns a :class:`Mesh` of float64 vertices ``(V, 3)`` and int64 triangles ``(F, 3)``
(polygons are fan-triangulated). Anything that cannot be read -- an empty, truncated or corrupt
file, an index out of range, a non-finite coordinate, a mesh without faces -- raises
:class:`~clip2point_hf.errors.DatasetFormatError` naming the file and the problem.

Formats and quirks handled:

- OFF (also ``COFF``/``NOFF``/``STOFF`` extra vertex columns, face colours, ``#`` comments, records wrapped
  over several lines, and the ModelNet header glued to the counts: ``OFF490 518 0``).
- OBJ: ``v`` lines (extra colour columns ignored), ``f`` lines with ``v``, ``v/vt``, ``v//vn``,
  ``v/vt/vn`` corners, negative (relative) indices, polygons, ``\\`` line continuations.
- PLY: ``ascii``, ``binary_little_endian`` and ``binary_big_endian``; any scalar types; face list
  ``vertex_indices`` or ``vertex_index``, polygons of mixed sizes; extra elements and properties are skipped.
  A PLY without faces is a scan: :func:`read_ply` gives its vertices as points.
- STL: ASCII (one or several solids) and binary (binary files whose header starts with ``solid`` too).

Why our own readers and not trimesh's: BENCHMARKS.md, "Reading files". The table from file type to
reader is ``point_files.FILE_TYPES``; glTF is read in ``gltf_io.py``, point formats in ``point_io.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError

__all__ = [
    "Mesh",
    "checked_mesh",
    "read_file_bytes",
    "read_obj",
    "read_off",
    "read_ply",
    "read_stl",
    "sample_surface",
]


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh: ``vertices`` float64 ``(V, 3)``, ``faces`` int64 ``(F, 3)``."""

    vertices: np.ndarray
    faces: np.ndarray


def read_file_bytes(path: Path) -> bytes:
    """The whole file, or one line naming it: not found, unreadable, or empty (whitespace only)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetFormatError(path, "file not found") from None
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data.strip():
        raise DatasetFormatError(path, "empty file")
    return data


def checked_mesh(path: Path, vertices, faces, fmt: str) -> Mesh:
    """A reader's vertices and triangles as a :class:`Mesh`, once they are known to be one: finite
    coordinates, at least one face, every index in range (``fmt`` names the format in the errors)."""
    try:
        v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    except ValueError as exc:
        raise DatasetFormatError(path, f"corrupt {fmt} vertex data ({exc})") from None
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(v) == 0:
        raise DatasetFormatError(path, f"{fmt} mesh has no vertices")
    if len(f) == 0:
        raise DatasetFormatError(path, f"{fmt} mesh has no faces (a point cloud, not a surface)")
    if not np.isfinite(v).all():
        bad = int((~np.isfinite(v).all(axis=1)).sum())
        raise DatasetFormatError(path, f"{bad} vertices have NaN or infinite coordinates")
    lo, hi = int(f.min()), int(f.max())
    if lo < 0 or hi >= len(v):
        raise DatasetFormatError(
            path, f"face vertex index out of range (min {lo}, max {hi}, the mesh has {len(v)} vertices)"
        )
    return Mesh(vertices=v, faces=f)


def _fan(polys: list[list[int]]) -> list[tuple[int, int, int]]:
    tris: list[tuple[int, int, int]] = []
    for p in polys:
        for k in range(1, len(p) - 1):
            tris.append((p[0], p[k], p[k + 1]))
    return tris


_OFF_HEADER = re.compile(r"^(ST)?C?N?OFF(?![A-Za-z])")


def read_off(path: str | Path) -> Mesh:
    """Read an OFF file, including ModelNet's broken header (``OFF490 518 0`` on one line)."""
    path = Path(path)
    text = read_file_bytes(path).decode("latin-1")
    lines = [s for s in (raw.split("#", 1)[0].strip() for raw in text.splitlines()) if s]
    if not lines:
        raise DatasetFormatError(path, "empty file (only comments)")
    m = _OFF_HEADER.match(lines[0])
    if m is None:
        raise DatasetFormatError(path, f"missing OFF header (first line starts with {lines[0][:20]!r})")
    rest = lines[0][m.end() :].strip()
    pos = 1
    if not rest:
        if len(lines) < 2:
            raise DatasetFormatError(path, "truncated OFF file: no vertex/face counts after the header")
        rest, pos = lines[1], 2
    counts = rest.split()
    try:
        nv, nf = int(counts[0]), int(counts[1])
    except (ValueError, IndexError):
        raise DatasetFormatError(path, f"bad OFF counts line {rest[:40]!r} (expected 'nv nf ne')") from None
    if nv < 0 or nf < 0:
        raise DatasetFormatError(path, f"negative OFF counts ({nv} vertices, {nf} faces)")
    try:
        vertices, faces = _off_records(path, lines[pos:], nv, nf)
    except DatasetFormatError as by_lines:
        # Records may wrap over several lines (tokens are whitespace-separated): read the tokens as a stream.
        try:
            vertices, faces = _off_tokens(path, " ".join(lines[pos:]).split(), nv, nf, m.group(0))
        except DatasetFormatError:
            raise by_lines from None
    return checked_mesh(path, vertices, faces, "OFF")


def _off_tokens(path: Path, tokens: list[str], nv: int, nf: int, header: str):
    """OFF data as a token stream: ``nv`` vertices (3 coordinates, plus normals for ``NOFF`` and texture
    coordinates for ``STOFF``; colours, of uncertain width, are not supported here), then ``nf`` faces
    ``n i1 ... in`` with no colour."""
    if "C" in header:
        raise DatasetFormatError(path, "wrapped COFF records (colour widths are ambiguous)")
    stride = 3 + 3 * ("N" in header) + 2 * header.startswith("ST")
    try:
        values = np.array(tokens[: nv * stride], dtype=np.float64)
        if len(values) < nv * stride:
            raise ValueError("too few vertex values")
        vertices = values.reshape(nv, stride)[:, :3]
        rest, polys, k = tokens[nv * stride :], [], 0
        for _ in range(nf):
            n = int(rest[k])
            polys.append([int(t) for t in rest[k + 1 : k + 1 + n]])
            if len(polys[-1]) < n:
                raise ValueError("too few face indices")
            k += 1 + n
    except (ValueError, IndexError) as error:
        raise DatasetFormatError(path, f"corrupt OFF data ({error})") from None
    if k != len(rest):
        raise DatasetFormatError(path, f"{len(rest) - k} values after the {nf} declared faces")
    return vertices, _fan([p for p in polys if len(p) >= 3])


def _off_records(path: Path, lines: list[str], nv: int, nf: int):
    """OFF data one record per line (the common case, and the only one with face colours)."""
    if len(lines) < nv + nf:
        raise DatasetFormatError(
            path,
            f"truncated OFF file: the header declares {nv} vertices and {nf} faces "
            f"but only {len(lines)} data lines follow",
        )
    vertex_lines, face_lines = lines[:nv], lines[nv : nv + nf]
    try:
        vertices = (
            np.loadtxt(vertex_lines, usecols=(0, 1, 2), ndmin=2, comments=None) if nv else np.zeros((0, 3))
        )
    except ValueError as exc:
        raise DatasetFormatError(path, f"corrupt OFF vertex data ({exc})") from None
    faces = _triangle_rows(face_lines)
    if faces is None:
        polys = []
        for r in (ln.split() for ln in face_lines):
            try:
                n = int(r[0])
                idx = [int(t) for t in r[1 : 1 + n]]
            except (ValueError, IndexError):
                raise DatasetFormatError(path, f"corrupt OFF face line {' '.join(r)[:60]!r}") from None
            if len(idx) < n:
                raise DatasetFormatError(path, f"OFF face line declares {n} corners but has {len(idx)}")
            if n >= 3:
                polys.append(idx)
        faces = _fan(polys)
    return vertices, faces


def _triangle_rows(rows: list[str]) -> np.ndarray | None:
    """``(F, 3)`` indices of text rows ``3 i j k`` (anything after them ignored: colours), or None when any row
    is something else, to be parsed one by one. numpy's own parser: 10x faster on an 80k-face file."""
    try:
        head = np.loadtxt(rows, np.int64, usecols=range(4), ndmin=2, comments=None) if rows else None
    except ValueError:
        return None
    return head[:, 1:] if head is not None and (head[:, 0] == 3).all() else None


def read_obj(path: str | Path) -> Mesh:
    """Read the geometry of a Wavefront OBJ file (``v`` and ``f`` records; everything else is ignored)."""
    path = Path(path)
    text = read_file_bytes(path).decode("latin-1")
    if "\\\n" in text or "\\\r\n" in text:
        text = text.replace("\\\r\n", " ").replace("\\\n", " ")
    fast = _obj_fast(text)
    if fast is not None:
        return checked_mesh(path, fast[0], fast[1], "OBJ")
    vrows: list[list[str]] = []
    polys: list[list[int]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith(("v ", "v\t")):
            parts = line.split()
            if len(parts) < 4:
                raise DatasetFormatError(path, f"line {lineno}: vertex with fewer than 3 coordinates")
            vrows.append(parts[1:4])
        elif line.startswith(("f ", "f\t")):
            nv = len(vrows)
            idx = []
            for corner in line.split()[1:]:
                if corner.startswith("#"):
                    break
                try:
                    i = int(corner.split("/", 1)[0])
                except ValueError:
                    raise DatasetFormatError(path, f"line {lineno}: bad face corner {corner!r}") from None
                if i == 0:
                    raise DatasetFormatError(path, f"line {lineno}: face index 0 (OBJ indices start at 1)")
                j = i - 1 if i > 0 else nv + i
                if j < 0 or j >= nv:
                    raise DatasetFormatError(
                        path, f"line {lineno}: face index {i} out of range ({nv} vertices defined so far)"
                    )
                idx.append(j)
            if len(idx) >= 3:
                polys.append(idx)
    try:
        vertices = np.array(vrows, dtype=np.float64).reshape(-1, 3)
    except ValueError as exc:
        raise DatasetFormatError(path, f"corrupt OBJ vertex data ({exc})") from None
    if not polys and not vrows:
        raise DatasetFormatError(path, "no 'v' or 'f' records: not an OBJ mesh")
    return checked_mesh(path, vertices, _fan(polys), "OBJ")


_OBJ_CORNER_TAIL = re.compile(r"/\S*")


def _obj_fast(text: str):
    """Vectorised path for the common OBJ: triangles only, positive indices, no inline comments.

    Returns ``(vertices, faces)`` or ``None`` (then the line-by-line reader runs and reports errors).
    """
    lines = text.splitlines()
    if any(ln[:1] in (" ", "\t") for ln in lines):
        lines = [ln.lstrip() for ln in lines]
    vl = [ln for ln in lines if ln[:2] in ("v ", "v\t")]
    fl = [ln[2:] for ln in lines if ln[:2] in ("f ", "f\t")]
    if not vl or not fl:
        return None
    try:
        vertices = np.loadtxt(vl, usecols=(1, 2, 3), ndmin=2, comments=None)  # numpy's own parser: fast
        joined = "\n".join(fl)
        if "#" in joined:
            return None
        if "/" in joined:
            joined = _OBJ_CORNER_TAIL.sub("", joined)
        faces = np.loadtxt(joined.splitlines(), np.int64, ndmin=2, comments=None) - 1  # rows of one length
    except ValueError:
        return None
    if faces.shape[1] != 3 or (faces < 0).any() or faces.max() >= len(vertices):
        return None
    return vertices, faces


_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def _ply_header(path: Path, data: bytes):
    if not data.startswith(b"ply"):
        raise DatasetFormatError(path, "missing 'ply' magic at the start of the file")
    end = data.find(b"end_header")
    if end < 0:
        raise DatasetFormatError(path, "PLY header has no 'end_header' line (truncated or corrupt)")
    nl = data.find(b"\n", end)
    body_start = len(data) if nl < 0 else nl + 1
    header = data[:end].decode("latin-1").splitlines()
    fmt = None
    elements: list[
        list
    ] = []  # [name, count, [props]]; prop = (name, dtype) or (name, count_dtype, item_dtype)
    for ln in header[1:]:
        parts = ln.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        try:
            if parts[0] == "format":
                fmt = parts[1]
            elif parts[0] == "element":
                elements.append([parts[1], int(parts[2]), []])
            elif parts[0] == "property":
                if not elements:
                    raise ValueError("property before any element")
                if parts[1] == "list":
                    elements[-1][2].append((parts[4], _PLY_TYPES[parts[2]], _PLY_TYPES[parts[3]]))
                else:
                    elements[-1][2].append((parts[2], _PLY_TYPES[parts[1]]))
        except (IndexError, KeyError, ValueError) as exc:
            raise DatasetFormatError(path, f"bad PLY header line {ln.strip()!r} ({exc})") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DatasetFormatError(path, f"unsupported PLY format {fmt!r}")
    return fmt, elements, body_start


def _ply_vertex_columns(path: Path, props) -> list[int]:
    names = [p[0] for p in props]
    try:
        return [names.index(a) for a in ("x", "y", "z")]
    except ValueError:
        raise DatasetFormatError(path, f"PLY vertex element lacks x/y/z properties (has {names})") from None


def _ply_face_prop(path: Path, props) -> int:
    for k, p in enumerate(props):
        if len(p) == 3 and p[0] in ("vertex_indices", "vertex_index"):
            return k
    for k, p in enumerate(props):
        if len(p) == 3:
            return k
    raise DatasetFormatError(path, "PLY face element has no vertex index list")


def read_ply(path: str | Path) -> Mesh | np.ndarray:
    """Read a PLY file (ascii or binary, either endianness): a :class:`Mesh` when it has faces, else its
    vertices as a float64 ``(N, 3)`` array of points (a scan)."""
    path = Path(path)
    data = read_file_bytes(path)
    fmt, elements, body_start = _ply_header(path, data)
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise DatasetFormatError(path, f"PLY file has no 'vertex' element (has {names})")
    if fmt == "ascii":
        vertices, faces = _ply_ascii(path, data[body_start:], elements)
    else:
        vertices, faces = _ply_binary(
            path, data, body_start, elements, "<" if fmt.endswith("little_endian") else ">"
        )
    if faces is None and "tristrips" in names:
        raise DatasetFormatError(
            path, "PLY triangle strips ('tristrips') are not read; export 'face' elements"
        )
    if faces is None or len(faces) == 0:
        return np.asarray(vertices, dtype=np.float64)
    return checked_mesh(path, vertices, faces, "PLY")


def _ply_ascii(path: Path, body: bytes, elements):
    lines = [ln for ln in body.decode("latin-1").splitlines() if ln.strip()]
    pos = 0
    vertices = faces = None
    for name, count, props in elements:
        if vertices is not None and faces is not None:
            break
        rows = lines[pos : pos + count]
        if len(rows) < count:
            raise DatasetFormatError(
                path, f"truncated PLY file: element {name!r} declares {count} rows, {len(rows)} present"
            )
        pos += count
        if name == "vertex":
            cols = _ply_vertex_columns(path, props)
            if any(len(p) == 3 for p in props):
                raise DatasetFormatError(path, "PLY vertex element with list properties is not supported")
            try:
                table = np.loadtxt(rows, ndmin=2, comments=None) if count else np.zeros((0, len(props)))
                vertices = table[:, cols]
            except (ValueError, IndexError) as exc:
                raise DatasetFormatError(path, f"corrupt PLY vertex data ({exc})") from None
        elif name == "face":
            k = _ply_face_prop(path, props)
            faces = _triangle_rows(rows) if k == 0 else None
            if faces is not None:
                continue
            polys = []
            for r in rows:
                toks = r.split()
                try:
                    t = 0
                    for j, p in enumerate(props):
                        if len(p) == 3:
                            n = int(toks[t])
                            if j == k:
                                idx = [int(x) for x in toks[t + 1 : t + 1 + n]]
                                if len(idx) < n:
                                    raise ValueError(f"expected {n} indices")
                            t += 1 + n
                        else:
                            t += 1
                except (ValueError, IndexError) as exc:
                    raise DatasetFormatError(path, f"corrupt PLY face line {r[:60]!r} ({exc})") from None
                if len(idx) >= 3:
                    polys.append(idx)
            faces = _fan(polys)
    return vertices, faces


def _ply_binary(path: Path, data: bytes, offset: int, elements, endian: str):
    vertices = faces = None
    for name, count, props in elements:
        if vertices is not None and faces is not None:
            break
        if all(len(p) == 2 for p in props):
            dt = np.dtype([(f"p{j}", endian + p[1]) for j, p in enumerate(props)])
            need = dt.itemsize * count
            if offset + need > len(data):
                raise DatasetFormatError(
                    path,
                    f"truncated PLY file: element {name!r} needs {need} bytes at offset {offset}, "
                    f"file has {len(data)}",
                )
            table = np.frombuffer(data, dtype=dt, count=count, offset=offset)
            offset += need
            if name == "vertex":
                cols = _ply_vertex_columns(path, props)
                vertices = np.stack([table[f"p{c}"].astype(np.float64) for c in cols], axis=1)
            elif name == "face":
                raise DatasetFormatError(path, "PLY face element has no vertex index list")
            continue
        if name == "vertex":
            raise DatasetFormatError(path, "PLY vertex element with list properties is not supported")
        k = _ply_face_prop(path, props) if name == "face" else -1
        result, offset = _ply_binary_lists(path, data, offset, name, count, props, k, endian)
        if name == "face":
            faces = result
    return vertices, faces


def _ply_binary_lists(path, data, offset, name, count, props, k, endian):
    """Parse an element with list properties; fast path when every list has the same length."""
    if count == 0:
        return np.zeros((0, 3), np.int64), offset
    # Fast path: assume every list has the length of the first record's lists.
    try:
        fields, off = [], offset
        for j, p in enumerate(props):
            if len(p) == 2:
                fields.append((f"p{j}", endian + p[1]))
                off += np.dtype(p[1]).itemsize
            else:
                n = int(np.frombuffer(data, dtype=endian + p[1], count=1, offset=off)[0])
                fields.append((f"n{j}", endian + p[1]))
                fields.append((f"p{j}", endian + p[2], (n,)))
                off += np.dtype(p[1]).itemsize + n * np.dtype(p[2]).itemsize
        dt = np.dtype(fields)
        if offset + dt.itemsize * count <= len(data):
            table = np.frombuffer(data, dtype=dt, count=count, offset=offset)
            ok = all((table[f"n{j}"] == table[f"n{j}"][0]).all() for j, p in enumerate(props) if len(p) == 3)
            if ok:
                offset += dt.itemsize * count
                if k < 0:
                    return None, offset
                idx = table[f"p{k}"].astype(np.int64).reshape(count, -1)
                if idx.shape[1] < 3:
                    return np.zeros((0, 3), np.int64), offset
                if idx.shape[1] == 3:
                    return idx, offset
                return np.asarray(_fan(idx.tolist()), np.int64), offset
    except (ValueError, IndexError):
        pass
    # Slow path: variable-length lists.
    polys = []
    try:
        for _ in range(count):
            for j, p in enumerate(props):
                if len(p) == 2:
                    offset += np.dtype(p[1]).itemsize
                    continue
                n = int(np.frombuffer(data, dtype=endian + p[1], count=1, offset=offset)[0])
                offset += np.dtype(p[1]).itemsize
                vals = np.frombuffer(data, dtype=endian + p[2], count=n, offset=offset)
                offset += n * np.dtype(p[2]).itemsize
                if j == k and n >= 3:
                    polys.append(vals.astype(np.int64).tolist())
    except ValueError:
        raise DatasetFormatError(
            path, f"truncated PLY file: element {name!r} ends before its {count} rows"
        ) from None
    if offset > len(data):
        raise DatasetFormatError(path, f"truncated PLY file: element {name!r} ends before its {count} rows")
    return (np.asarray(_fan(polys), np.int64).reshape(-1, 3) if k >= 0 else None), offset


_STL_VERTEX = re.compile(rb"vertex\s+(\S+)\s+(\S+)\s+(\S+)")
_STL_RECORD = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])


def read_stl(path: str | Path) -> Mesh:
    """Read an ASCII or binary STL file (triangle soup: three vertices per face)."""
    path = Path(path)
    data = read_file_bytes(path)
    is_binary = False
    if len(data) >= 84:
        n = int.from_bytes(data[80:84], "little")
        is_binary = 84 + 50 * n == len(data)
    if not is_binary and data.lstrip()[:5].lower() == b"solid":
        matches = _STL_VERTEX.findall(data)
        if not matches:
            raise DatasetFormatError(path, "ASCII STL without any 'vertex' records")
        if len(matches) % 3:
            raise DatasetFormatError(
                path, f"ASCII STL has {len(matches)} vertices, not a multiple of 3 (truncated?)"
            )
        if b"endsolid" not in data:
            raise DatasetFormatError(path, "truncated ASCII STL: no 'endsolid' line")
        try:
            v = np.array(matches, dtype=np.float64)
        except ValueError as exc:
            raise DatasetFormatError(path, f"corrupt ASCII STL vertex ({exc})") from None
        return checked_mesh(path, v, np.arange(len(v)).reshape(-1, 3), "STL")
    if len(data) < 84:
        raise DatasetFormatError(path, f"binary STL shorter than its 84-byte header ({len(data)} bytes)")
    n = int.from_bytes(data[80:84], "little")
    if 84 + 50 * n != len(data):
        raise DatasetFormatError(
            path,
            f"binary STL declares {n} triangles ({84 + 50 * n} bytes) but the file has {len(data)} bytes "
            "(truncated or corrupt)",
        )
    rec = np.frombuffer(data, dtype=_STL_RECORD, count=n, offset=84)
    v = rec["v"].reshape(-1, 3).astype(np.float64)
    return checked_mesh(path, v, np.arange(len(v)).reshape(-1, 3), "STL")


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def sample_surface(
    mesh: Mesh,
    num_points: int,
    rng: np.random.Generator,
    *,
    return_normals: bool = False,
    path: str | Path | None = None,
    dtype: type[np.floating] = np.float32,
):
    """Area-weighted uniform sampling of ``num_points`` points on the surface of ``mesh``.

    Each point picks a triangle with probability proportional to its area (zero-area triangles are
    never picked), then uniform barycentric coordinates (the square-root trick). Only
    ``rng.random`` is used, whose stream numpy keeps stable across versions (trimesh's
    ``sample_surface`` draws the same distribution, but its stream is its own: BENCHMARKS.md,
    "Reading files").

    Returns:
        ``points`` ``(num_points, 3)`` of ``dtype``, and with ``return_normals`` also the unit normals of the
        picked triangles (orientation as the mesh's winding). The points are computed in float64: ask for
        float64 to keep a mesh far from the origin (map coordinates) exact until it is centred.

    Raises:
        DatasetFormatError: the mesh has zero (or non-finite) surface area (``path`` names the file).
    """
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ValueError(f"`num_points` must be a positive int, got {num_points!r}")
    v, f = mesh.vertices, mesh.faces
    a = v[f[:, 0]]
    e1 = v[f[:, 1]] - a
    e2 = v[f[:, 2]] - a
    cross = np.cross(e1, e2)
    dbl_area = np.sqrt(np.einsum("ij,ij->i", cross, cross))
    total = float(dbl_area.sum())
    extent = float(np.ptp(v, axis=0).max()) if len(v) else 0.0
    if not np.isfinite(total) or total <= 1e-12 * max(extent * extent, np.finfo(np.float64).tiny):
        raise DatasetFormatError(path, f"mesh has zero surface area ({len(f)} faces, all degenerate)")
    cdf = np.cumsum(dbl_area)
    u = rng.random(num_points) * cdf[-1]
    idx = np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
    r = rng.random((num_points, 2))
    s = np.sqrt(r[:, 0])
    w1 = (s * (1.0 - r[:, 1]))[:, None]
    w2 = (s * r[:, 1])[:, None]
    points = (a[idx] + w1 * e1[idx] + w2 * e2[idx]).astype(dtype)
    if not return_normals:
        return points
    normals = (cross[idx] / dbl_area[idx, None]).astype(dtype)
    return points, normals
