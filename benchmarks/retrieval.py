"""Retrieval: quality on SHREC'16 before and after image-depth pre-training, and the index's scale.

``quality``: two models embed SHREC'16 (``clip2point_apps.retrieval.ShapeIndex`` over the loader's train and test
splits; 1024 points, the given views and point radius):

* text -> shape: for each of the 30 classes, the class prompt (``"image of a {name}"``, the zero-shot prompt) is the
  query; precision@1 and @5 over the test index (4 shapes per class) and over the train index (16 per class);
* shape -> shape: each test shape queries the train index; mAP over the 120 queries (a train shape is relevant when
  it has the query's class), and precision@1 (nearest-neighbour accuracy).

Chance: precision@k of a random ranking is R/N; chance mAP is the mean AP of random rankings (200 draws).

``photo``: photo -> shape, CLIP2Point's native query (pre-training aligns the depth encoder with CLIP's image tower).
Queries: the shaded RGB renderings of the SHREC'16 test shapes as ``build_render_pairs`` makes them (10 views each,
1,200 photos; ``--pairs_dir``), through the model's image tower and CLIP's image processor
(``clip2point_apps.retrieval.PhotoEncoder``). Index: the 120 SHREC'16 test shapes (meshes sampled to 1024 points by
``load_mesh_folder``, not the pairs' clouds). A shape of the photo's class is relevant (4 per class): precision@1, @5
and mAP; and instance recall@1/@5 (the photo's own shape found). Each model folder is measured after pre-training
and *before* it: the same folder with its depth encoder reset to the image tower (pre-training starts the depth
encoder as a copy of that tower).

``scale``: synthetic L2-normalised vectors (D=512, CLIP ViT-B/32's size) drawn around 1,000 random centres (real
embeddings cluster; uniform random vectors are the worst case for any approximate index), at 10k, 100k and 1M:
the index build (``ShapeIndex.from_embeddings`` + ``save``; then faiss IVF or HNSW through datasets'
``add_faiss_index``) in vectors/s, and single-query latency of exact search (one matrix product) against the
approximate indexes, with recall@10 against exact. Also the model-included build throughput: ``ShapeIndex.build``
over SHREC'16's 480 train meshes with the small model (read and sample each mesh, render, embed, write chunks,
merge). Medians of ``--repeats`` runs.

    python benchmarks/retrieval.py quality --dataset ../shared/data/shrec_16 \\
        --model before=runs/tiny_clip --model after=runs/pretrain_shrec --views 10 --point_radius 0.04
    python benchmarks/retrieval.py scale --sizes 10000 100000 1000000 --model runs/pretrain_shrec \\
        --dataset ../shared/data/shrec_16
    python benchmarks/retrieval.py photo --pairs_dir runs/shrec_pairs --model runs/pretrain_photo
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clip2point_apps.retrieval import PhotoEncoder, ShapeIndex
from clip2point_hf import (
    CLIP2PointFeatureExtractor,
    CLIP2PointModel,
    CLIP2PointProcessor,
    PointCloudFeatureExtractionPipeline,
)

# ---------------------------------------------------------------------------------------------------- quality


def load_embedder(path: str, views: str, point_radius: float) -> PointCloudFeatureExtractionPipeline:
    """A CLIP2Point folder, or a CLIP folder (the model before pre-training: CLIP's vision tower as depth encoder)."""
    from transformers import AutoConfig, AutoTokenizer

    if AutoConfig.from_pretrained(path).model_type == "clip":
        model = CLIP2PointModel.from_clip(path)
    else:
        model = CLIP2PointModel.from_pretrained(path)
    processor = CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(
            num_points=1024,
            views=views,
            point_radius=point_radius,
            image_size=model.config.vision_config.image_size,
        ),
        AutoTokenizer.from_pretrained(path),
    )
    return PointCloudFeatureExtractionPipeline(model=model.eval(), processor=processor)


def zero_shot_prompts(embedder: PointCloudFeatureExtractionPipeline, names: list[str]) -> np.ndarray:
    """The class prompts exactly as zero-shot classification makes them (the model's template, names put whole)."""
    from clip2point_hf.prompts import encode_class_prompts

    templates = list(embedder.model.config.prompt_templates)
    with torch.inference_mode():
        return encode_class_prompts(embedder.model, embedder.processor.tokenizer, names, templates).numpy()


def average_precision(relevant: np.ndarray) -> float:
    """AP of one ranking given as a boolean relevance vector (best first)."""
    hits = np.flatnonzero(relevant)
    return float(np.mean((np.arange(len(hits)) + 1) / (hits + 1))) if len(hits) else 0.0


def precision_at(relevant: np.ndarray, k: int) -> float:
    return float(relevant[:, :k].mean())


def quality(args) -> dict:
    from clip2point_hf.data import load_mesh_folder
    from clip2point_hf.prompts import prompt_names

    data = load_mesh_folder(args.dataset, num_points=1024, seed=0)
    classes = data["train"].features["label"].names
    prompts = prompt_names(classes, distinct=True)
    labels = {split: np.asarray(data[split]["label"]) for split in ("train", "test")}
    rng = np.random.default_rng(0)
    result = {"dataset": args.dataset, "views": args.views, "point_radius": args.point_radius, "models": {}}
    for spec in args.model:
        tag, path = spec.split("=", 1)
        embedder = load_embedder(path, args.views, args.point_radius)
        out = Path(args.output_dir) / tag
        index = {
            split: ShapeIndex.build(
                data[split], embedder, out / split, paths_root=args.dataset, faiss=None, progress=False
            )
            for split in ("train", "test")
        }
        text = zero_shot_prompts(embedder, prompts)
        row = {"model": path}
        for split in ("test", "train"):
            _, rows = index[split].search_rows(text, k=5, exact=True)
            relevant = labels[split][rows] == np.arange(len(classes))[:, None]
            row[f"text_p@1_{split}"] = precision_at(relevant, 1)
            row[f"text_p@5_{split}"] = precision_at(relevant, 5)
        _, rows = index["train"].search_rows(index["test"].embeddings, k=len(index["train"]), exact=True)
        relevant = labels["train"][rows] == labels["test"][:, None]
        row["shape_map"] = float(np.mean([average_precision(r) for r in relevant]))
        row["shape_p@1"] = precision_at(relevant, 1)
        result["models"][tag] = row
        print(tag, json.dumps(row))
    random_rank = np.stack([rng.permutation(len(labels["train"])) for _ in range(200)])
    chance_ap = [
        average_precision(labels["train"][order] == labels["test"][q % len(labels["test"])])
        for q, order in enumerate(random_rank)
    ]
    per_class = {split: np.bincount(labels[split]).mean() / len(labels[split]) for split in labels}
    result["chance"] = {
        "text_p@k_test": float(per_class["test"]),
        "text_p@k_train": float(per_class["train"]),
        "shape_map": float(np.mean(chance_ap)),
        "shape_p@1": float(per_class["train"]),
    }
    print("chance", json.dumps(result["chance"]))
    return result


# ---------------------------------------------------------------------------------------------------- photo


def before_pretraining(embedder: PointCloudFeatureExtractionPipeline, encoder: PhotoEncoder):
    """The embedder with its depth encoder reset to the image tower, as pre-training starts it."""
    import copy

    model = copy.deepcopy(embedder.model)
    model.depth_model.load_state_dict(encoder.model.vision_model.state_dict())
    model.depth_projection.load_state_dict(encoder.model.visual_projection.state_dict())
    return PointCloudFeatureExtractionPipeline(model=model.eval(), processor=embedder.processor)


def photo(args) -> dict:
    from clip2point_hf.data import load_mesh_folder

    data = load_mesh_folder(args.dataset, num_points=1024, seed=0)["test"]
    classes = data.features["label"].names
    labels = np.asarray(data["label"])
    row_of = {path: row for row, path in enumerate(data["path"])}  # "<class>/test/<model>.obj"
    pairs = Path(args.pairs_dir)
    photos, photo_labels, photo_rows = [], [], []
    for line in (pairs / "ShapeNet-55" / "test.txt").read_text().split():
        cls, model = line.removesuffix(".npy").split("-", 1)
        views = sorted((pairs / "rendering" / f"{cls}_{model}").glob("*.png"), key=lambda p: int(p.stem))
        photos += views
        photo_labels += [classes.index(cls)] * len(views)
        photo_rows += [row_of[f"{cls}/test/{model}.obj"]] * len(views)
    photo_labels, photo_rows = np.asarray(photo_labels), np.asarray(photo_rows)
    result = {"dataset": args.dataset, "pairs_dir": args.pairs_dir, "photos": len(photos), "models": {}}
    for path in args.model:
        embedder = load_embedder(path, args.views, args.point_radius)
        encoder = PhotoEncoder.from_pretrained(path)
        start = time.perf_counter()
        queries = encoder.embed(photos)
        photo_seconds = time.perf_counter() - start
        for tag, depth in (("before", before_pretraining(embedder, encoder)), ("after", embedder)):
            out = Path(args.output_dir) / Path(path).name / tag
            shutil.rmtree(out, ignore_errors=True)  # a complete index there would be loaded, not rebuilt
            index = ShapeIndex.build(data, depth, out, paths_root=args.dataset, faiss=None, progress=False)
            _, rows = index.search_rows(queries, k=len(index), exact=True)
            relevant = labels[rows] == photo_labels[:, None]
            own = rows == photo_rows[:, None]
            row = {
                "model": path,
                "p@1": precision_at(relevant, 1),
                "p@5": precision_at(relevant, 5),
                "map": float(np.mean([average_precision(r) for r in relevant])),
                "instance_r@1": float(own[:, :1].any(axis=1).mean()),
                "instance_r@5": float(own[:, :5].any(axis=1).mean()),
                "photos_per_s": len(photos) / photo_seconds,
            }
            result["models"][f"{Path(path).name}/{tag}"] = row
            print(f"{Path(path).name}/{tag}", json.dumps(row))
    rng = np.random.default_rng(0)
    chance_ap = [
        average_precision(labels[rng.permutation(len(labels))] == photo_labels[q]) for q in range(len(photos))
    ]
    result["chance"] = {
        "p@k": float(np.bincount(labels).mean() / len(labels)),
        "map": float(np.mean(chance_ap)),
        "instance_r@1": 1 / len(labels),
        "instance_r@5": 5 / len(labels),
    }
    print("chance", json.dumps(result["chance"]))
    return result


# ---------------------------------------------------------------------------------------------------- scale


def clustered_vectors(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # in blocks, to bound the temporaries
        stop = min(n, start + 100_000)
        picked = centres[rng.integers(0, len(centres), stop - start)]
        block = picked + rng.standard_normal((stop - start, dim), dtype=np.float32) * 0.6 / np.sqrt(dim)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def query_latency(index: ShapeIndex, queries: np.ndarray, exact: bool) -> tuple[float, np.ndarray]:
    """Median single-query latency (ms) over the queries (after one warm-up), and the (Q, 10) rows found."""
    index.search_rows(queries[:1], k=10, exact=exact)
    times, rows = [], []
    for q in queries:
        start = time.perf_counter()
        _, found = index.search_rows(q, k=10, exact=exact)
        times.append(time.perf_counter() - start)
        rows.append(found[0])
    return 1000 * statistics.median(times), np.stack(rows)


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]))


def scale(args) -> dict:
    from datasets import disable_progress_bars

    disable_progress_bars()
    rng = np.random.default_rng(0)
    dim = 512
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries = clustered_vectors(args.queries, dim, rng, centres)
    result = {"dim": dim, "queries": args.queries, "torch_threads": torch.get_num_threads(), "sizes": {}}
    for n in args.sizes:
        result["sizes"][n] = scale_row(clustered_vectors(n, dim, rng, centres), queries, args)
        print(n, json.dumps(result["sizes"][n]))
    if args.model:
        result["model_build"] = model_build(args)
        print("model build", json.dumps(result["model_build"]))
    return result


def scale_row(vectors: np.ndarray, queries: np.ndarray, args) -> dict:
    n = len(vectors)
    names = [f"shape{i}" for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:

        def build() -> ShapeIndex:
            index = ShapeIndex.from_embeddings(vectors, names)
            index.save(Path(tmp) / "idx")
            return index

        seconds, index = timed(build, args.repeats if n <= 100_000 else 1)
    row: dict = {"build_exact_vectors_per_s": n / seconds}
    row["exact_ms"], exact = query_latency(index, queries, exact=True)
    nlist = int(2 ** round(np.log2(np.sqrt(n))))
    approximate = {f"IVF{nlist},Flat": ("nprobe", args.nprobe)}
    if n <= args.max_hnsw:
        approximate["HNSW32"] = ("ef_search", args.ef_search)
    for factory, (knob, values) in approximate.items():
        seconds, _ = timed(lambda f=factory: index.add_faiss_index(f, train_size=min(n, 40 * nlist)), 1)
        row[factory] = {"build_vectors_per_s": n / seconds}
        for value in values:
            index.set_search_parameters(**{knob: value})
            latency, found = query_latency(index, queries, exact=False)
            row[factory][f"{knob}={value}"] = {
                "query_ms": latency,
                "recall@10": recall_at_10(found, exact),
                "speedup": row["exact_ms"] / latency,
            }
        index.drop_faiss_index()
    return row


def model_build(args) -> dict:
    """`ShapeIndex.build` over the SHREC'16 train meshes (files -> index), and the part spent reading meshes."""
    from clip2point_hf.point_files import read_point_cloud

    files = sorted(Path(args.dataset).glob("*/train/*.obj"))
    embedder = load_embedder(args.model, args.views, args.point_radius)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shapes"
        for f in files:  # a flat copy of the train meshes: the folder an index is built over
            (folder / f.parent.parent.name).mkdir(parents=True, exist_ok=True)
            os.link(f, folder / f.parent.parent.name / f.name)
        seconds, _ = timed(
            lambda: ShapeIndex.build(
                folder, embedder, Path(tmp) / f"idx{time.monotonic_ns()}", progress=False
            ),
            args.repeats,
        )
        read_seconds, _ = timed(lambda: [read_point_cloud(f) for f in files], args.repeats)
    return {
        "model": args.model,
        "views": args.views,
        "clouds": len(files),
        "clouds_per_s": len(files) / seconds,
        "reading_share": read_seconds / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    q = commands.add_parser("quality", help="retrieval quality on SHREC'16, before/after pre-training")
    q.add_argument("--model", action="append", required=True, help="tag=path (a CLIP or CLIP2Point folder)")
    q.add_argument("--output_dir", default="runs/retrieval_quality")
    ph = commands.add_parser("photo", help="photo -> shape on SHREC'16, before/after pre-training")
    ph.add_argument("--model", action="append", required=True, help="a CLIP2Point folder with image_encoder/")
    ph.add_argument("--pairs_dir", required=True, help="build_render_pairs output over the dataset")
    ph.add_argument("--output_dir", default="runs/retrieval_photo")
    s = commands.add_parser("scale", help="index build throughput and query latency on synthetic vectors")
    s.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    s.add_argument("--queries", type=int, default=100)
    s.add_argument("--nprobe", type=int, nargs="+", default=[8, 32], help="IVF cells visited per query")
    s.add_argument("--ef_search", type=int, nargs="+", default=[32, 128], help="HNSW search beam")
    s.add_argument("--max_hnsw", type=int, default=100_000, help="skip HNSW above this size (slow to build)")
    s.add_argument(
        "--model", help="also time ShapeIndex.build over the SHREC'16 train meshes with this model"
    )
    for p in (q, ph, s):
        p.add_argument("--dataset", default="../shared/data/shrec_16")
        p.add_argument("--views", default="reference10")
        p.add_argument("--point_radius", type=float, default=0.04)
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    result = {"quality": quality, "photo": photo, "scale": scale}[args.command](args)
    result["machine"] = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
