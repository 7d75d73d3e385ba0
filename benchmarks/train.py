#!/usr/bin/env python
"""Training benchmarks for the example scripts.

``throughput``: samples/s, peak memory and the share of rendering in one image-depth pre-training step (the
step of ``examples/pretrain.py``: render two depth maps per object on the device, depth encoder forward and
backward, frozen image encoder forward, global-negative loss, AdamW update), on synthetic batches so that data
loading is not measured::

    python benchmarks/train.py throughput --clip_config vit-b-32 --batch_size 8                      # CPU
    python benchmarks/train.py throughput --clip_config vit-b-32 --batch_size 256 --mixed_precision bf16 --device cuda

``tiny-clip``: a small CLIP whose image and text towers are aligned on the RGB renderings of a
``build_render_pairs`` folder (TRAIN objects only, minus the validation objects ``pretrain.py`` will hold out
with the same seed and percentage). No pretrained CLIP weights can be had on the machines this project was
built on; this stands in for one so that zero-shot accuracy means something in the pre-training learning run::

    python benchmarks/train.py tiny-clip --pairs_dir out/shrec_pairs --output_dir out/tiny_clip
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(args) -> dict:
    from accelerate import Accelerator

    from clip2point_apps.arguments import BackboneArguments
    from clip2point_apps.backbone import build_clip, load_tokenizer
    from clip2point_apps.training import pretraining_inputs
    from clip2point_hf import CLIP2PointForPreTraining
    from clip2point_hf.rendering_clip2point import VIEW_PRESETS, DepthRenderer

    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.device == "cpu")
    device = accelerator.device
    backbone = BackboneArguments(clip_config=args.clip_config, tokenizer="char")
    clip = build_clip(backbone, load_tokenizer(backbone), seed=0)
    model = CLIP2PointForPreTraining.from_clip(clip)
    model.freeze_for_training()  # as examples/pretrain.py: the depth encoder and `w` train
    del clip
    size = model.config.vision_config.image_size
    renderer = DepthRenderer(image_size=size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    g = torch.Generator().manual_seed(0)
    b = args.batch_size
    points = torch.randn(b, args.num_points, 3, generator=g)
    points = (
        points
        / points.norm(dim=-1, keepdim=True)
        * (0.5 + 0.5 * torch.rand(b, args.num_points, 1, generator=g))
    )
    angles = torch.tensor(VIEW_PRESETS["reference10"])[torch.randint(10, (b,), generator=g), :2]
    batch = {
        "points": points.to(device),
        "image": torch.randn(b, 3, size, size, generator=g).to(device),
        "view_angles": angles.to(device),
        "distances": (0.9 + 0.2 * torch.rand(b, 2, generator=g)).to(device),
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times, render_times = [], []
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        inputs = pretraining_inputs(renderer, batch)
        _sync(device)
        t1 = time.perf_counter()
        loss = model(**inputs).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        t2 = time.perf_counter()
        if i >= args.warmup:
            step_times.append(t2 - t0)
            render_times.append(t1 - t0)
    step = float(np.median(step_times))
    render = float(np.median(render_times))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        peak_name = "peak_gpu_memory_gib"
        device_name = torch.cuda.get_device_name(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
        peak_name = "peak_process_rss_gib"
        device_name = f"CPU ({torch.get_num_threads()} threads)"
    result = {
        "clip_config": args.clip_config,
        "device": device_name,
        "mixed_precision": args.mixed_precision,
        "batch_size": b,
        "num_points": args.num_points,
        "image_size": size,
        "steps_timed": args.steps,
        "step_seconds_median": step,
        "render_seconds_median": render,
        "render_share": render / step,
        "samples_per_second": b / step,
        peak_name: peak,
        "loss": float(loss.detach()),
    }
    print(json.dumps(result, indent=2))
    return result


def tiny_clip(args) -> dict:
    """Align a small random CLIP's towers on RGB renderings with class prompts.

    Each step scores a batch of renderings against the prompts of all classes (cross-entropy over the prompts,
    both towers and the logit scale train); every epoch takes ``views_per_epoch`` random renderings of each
    object. The objects ``pretrain.py`` holds out for validation (same seed and percentage) and the test split
    are never seen.
    """
    import torch.nn.functional as F
    from datasets import Image, List

    from clip2point_apps.arguments import BackboneArguments
    from clip2point_apps.backbone import build_clip, load_tokenizer
    from clip2point_hf.data import load_rgb_image, load_shapenet_pairs, stratified_split
    from clip2point_hf.prompts import prompt_names
    from clip2point_hf.rendering_clip2point import CLIP_MEAN, CLIP_STD

    torch.manual_seed(args.seed)
    backbone = BackboneArguments(clip_config=args.clip_config, tokenizer="char")
    tokenizer = load_tokenizer(backbone)
    clip = build_clip(backbone, tokenizer, seed=args.seed)
    size = clip.config.vision_config.image_size
    pairs = load_shapenet_pairs(args.pairs_dir, args.pairs_dir)
    train = pairs["train"].cast_column("images", List(Image(decode=False)))
    labels = np.asarray(train["label"])
    keep, held_out = stratified_split(labels, args.validation_split_percentage / 100, args.seed)
    names = prompt_names(train.features["label"].names, distinct=True)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)

    def decode(indices):
        rows = train.select(indices)
        views = torch.stack([torch.stack([load_rgb_image(v, size) for v in vs]) for vs in rows["images"]])
        return (views - mean) / std, torch.tensor(rows["label"])

    images, image_labels = decode(keep)  # (N, 10, 3, S, S)
    val_images, val_labels = decode(held_out)
    prompts = tokenizer([f"image of a {n}" for n in names], padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW(clip.parameters(), lr=args.learning_rate, weight_decay=0.05)
    n = len(image_labels)
    steps_per_epoch = math.ceil(n * args.views_per_epoch / args.batch_size)
    total = args.epochs * steps_per_epoch
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    )
    g = torch.Generator().manual_seed(args.seed)
    start = time.time()
    history = []

    def scores(pixels):
        image = F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        text = F.normalize(clip.get_text_features(**prompts).pooler_output, dim=-1)
        return clip.logit_scale.exp() * image @ text.T

    for epoch in range(args.epochs):
        clip.train()
        objects = torch.randperm(n, generator=g).repeat(args.views_per_epoch)
        views = torch.randint(10, (len(objects),), generator=g)
        order = torch.randperm(len(objects), generator=g)
        objects, views = objects[order], views[order]
        total_loss, correct = 0.0, 0
        for i in range(0, len(objects), args.batch_size):
            o, v = objects[i : i + args.batch_size], views[i : i + args.batch_size]
            logits = scores(images[o, v])
            loss = F.cross_entropy(logits, image_labels[o])
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            total_loss += float(loss.detach()) * len(o)
            correct += int((logits.argmax(-1) == image_labels[o]).sum())
        clip.eval()
        with torch.no_grad():
            val = scores(val_images.flatten(0, 1)).argmax(-1) == val_labels.repeat_interleave(10)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": total_loss / len(objects),
                "train_accuracy": correct / len(objects),
                "held_out_rgb_zero_shot_accuracy": float(val.float().mean()),
            }
        )
        print(json.dumps(history[-1]), flush=True)
    out = Path(args.output_dir)
    clip.save_pretrained(out)
    tokenizer.save_pretrained(out)
    result = {
        "pairs_dir": str(args.pairs_dir),
        "clip_config": args.clip_config,
        "objects_used": len(keep),
        "validation_objects_excluded": len(held_out),
        "epochs": args.epochs,
        "views_per_epoch": args.views_per_epoch,
        "seconds": time.time() - start,
        "history": history,
    }
    (out / "tiny_clip_training.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("throughput", help="pre-training step throughput")
    t.add_argument("--clip_config", default="vit-b-32")
    t.add_argument("--batch_size", type=int, default=8)
    t.add_argument("--num_points", type=int, default=1024)
    t.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--steps", type=int, default=5)
    c = sub.add_parser(
        "tiny-clip", help="a small CLIP aligned on RGB renderings (stand-in for a pretrained CLIP)"
    )
    c.add_argument("--pairs_dir", required=True)
    c.add_argument("--output_dir", required=True)
    c.add_argument("--clip_config", default="small")
    c.add_argument("--validation_split_percentage", type=float, default=10.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--epochs", type=int, default=40)
    c.add_argument("--views_per_epoch", type=int, default=2)
    c.add_argument("--batch_size", type=int, default=64)
    c.add_argument("--learning_rate", type=float, default=1e-3)
    args = parser.parse_args(argv)
    if args.command == "throughput":
        throughput(args)
    else:
        tiny_clip(args)


if __name__ == "__main__":
    main(sys.argv[1:])
