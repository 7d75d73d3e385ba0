"""Hugging Face ``datasets`` loaders for CLIP2Point: point clouds built once, cached and deterministic.

```python
from clip2point_hf.data import (load_modelnet, load_scanobjectnn, load_shapenet_pairs,
                                load_mesh_folder, build_render_pairs)
ds = load_modelnet("path/to/ModelNet40", num_points=1024, seed=0)   # OFF / normal_resampled / h5
ds = load_scanobjectnn("path/h5_files", variant="PB_T50_RS")         # or OBJ_ONLY / OBJ_BG
pairs = load_shapenet_pairs("path/ShapeNet55", "path/rendering")     # clouds + 10 views
ds = load_mesh_folder("path/shrec_16")                               # <class>/<split>/*.obj|off|ply|stl
build_render_pairs("path/shrec_16", "out/pairs")                     # 10 shaded views per mesh
```

Every loader returns a ``datasets.DatasetDict`` with ``points`` (``Array2D`` float32), ``label``
(``ClassLabel``), ``name`` and ``path`` columns, saved once under the cache (see
:mod:`clip2point_hf.data.cache`) and memory-mapped on later calls. Randomness for training
(sub-sampling, augmentation, the random view of a pair) lives in :class:`PointCloudTransform` and
:class:`RandomViewPairTransform`, applied on the fly.
"""

from .cache import LOADER_VERSION, dataset_metadata, default_cache_dir
from .collate import PointCloudTransform, batch_to_tensors, collate_point_clouds, point_cloud_dataloader
from .errors import DatasetFormatError, MissingFilesError
from .mesh_folder import load_mesh_folder, scan_mesh_folder
from .mesh_io import MESH_EXTENSIONS, Mesh, read_mesh, sample_surface, seeded_rng
from .modelnet import MODELNET_UP_AXIS, detect_modelnet_format, load_modelnet
from .names import (
    MODELNET10_CLASSES,
    MODELNET40_CLASSES,
    PROMPT_NAMES,
    SCANOBJECTNN_CLASSES,
    SHAPENET55_SYNSETS,
    prompt_name,
    prompt_names,
)
from .render_pairs import build_render_pairs
from .scanobjectnn import SCANOBJECTNN_VARIANTS, load_scanobjectnn
from .shapenet import RandomViewPairTransform, load_shapenet_pairs

__all__ = [
    "LOADER_VERSION",
    "MESH_EXTENSIONS",
    "MODELNET10_CLASSES",
    "MODELNET40_CLASSES",
    "MODELNET_UP_AXIS",
    "PROMPT_NAMES",
    "SCANOBJECTNN_CLASSES",
    "SCANOBJECTNN_VARIANTS",
    "SHAPENET55_SYNSETS",
    "DatasetFormatError",
    "Mesh",
    "MissingFilesError",
    "PointCloudTransform",
    "RandomViewPairTransform",
    "batch_to_tensors",
    "build_render_pairs",
    "collate_point_clouds",
    "dataset_metadata",
    "default_cache_dir",
    "detect_modelnet_format",
    "load_mesh_folder",
    "load_modelnet",
    "load_scanobjectnn",
    "load_shapenet_pairs",
    "point_cloud_dataloader",
    "prompt_name",
    "prompt_names",
    "read_mesh",
    "sample_surface",
    "scan_mesh_folder",
    "seeded_rng",
]
