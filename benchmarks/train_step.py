"""Training-step cost of each method relative to the plain ViT, in the ``freqkit compare`` recipe.

    python -m benchmarks.train_step                      # vit_mini segmenters, 64 px, batch 16, CPU
    python -m benchmarks.train_step --repeats 3 --threads 1
    python -m benchmarks.train_step --device cuda --batch 64

One optimizer step = forward + cross-entropy + backward + gradient clipping + AdamW, exactly as
``freqkit.train`` runs it (float32; ``--amp`` for bf16 autocast). Models are timed side by side in
one process, interleaved round by round after a warm-up; the table reports each one's median time
per step and its ratio to the first model. Data loading is not included (see ``--data-ms`` for the
built-in ``shapes`` generator's cost per batch).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks._common import add_common_args, describe, paired_ratio, ratio_entry, sync, write_json

DEFAULT_MODELS = "vit_mini,vit_mini+fdam,vit_mini+attnscale,vit_mini+featscale,vit_mini+gfsa"


def main(argv: list[str] | None = None) -> int:
    """Time the models and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--task", default="segmentation", choices=("segmentation", "classification"))
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds after one warm-up round")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from freqkit.data import shapes_sample
    from freqkit.models.spec import build_model
    from freqkit.train.optim import build_optimizer

    device = torch.device(args.device)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    torch.manual_seed(0)
    k = 5 if args.task == "segmentation" else 6
    x = torch.rand(args.batch, 3, args.img_size, args.img_size, device=device)
    y = (
        torch.randint(0, k, (args.batch, args.img_size, args.img_size))
        if args.task == "segmentation"
        else torch.randint(0, k, (args.batch,))
    ).to(device)
    runs = {}
    for name in names:
        model = build_model(name, args.task, k, args.img_size).to(device)
        runs[name] = (model, build_optimizer(model, 1e-3), sum(p.numel() for p in model.parameters()))

    def step(model, opt) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    times = {n: [] for n in names}
    for r in range(args.repeats + 1):
        for name in names:
            model, opt, _ = runs[name]
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(model, opt)
            sync(device)
            if r:  # round 0 warms up
                times[name].append((time.perf_counter() - t0) / args.steps)
    t0 = time.perf_counter()
    for i in range(args.batch):
        shapes_sample(0, "train", i, (args.img_size, args.img_size))
    data_ms = 1000 * (time.perf_counter() - t0)

    base = statistics.median(times[names[0]])
    print(
        f"{args.task}, {args.img_size} px, batch {args.batch}, {describe(device)}, "
        f"{'bf16 autocast' if args.amp else 'float32'}; median of {args.repeats} rounds x {args.steps} steps"
    )
    print(f"{'model':<22}{'params':>10}{'ms/step':>10}{'ratio':>8}")
    for name in names:
        med = statistics.median(times[name])
        print(f"{name:<22}{runs[name][2] / 1e6:>9.2f}M{1000 * med:>10.1f}{med / base:>8.2f}")
    print(f"shapes data generation: {data_ms:.1f} ms per batch of {args.batch} (one process)")
    rows = [
        dict(
            model=n,
            params=runs[n][2],
            times_ms=[t * 1e3 for t in times[n]],
            median_ms=1e3 * statistics.median(times[n]),
            ratio=statistics.median(times[n]) / base,
            paired_ratio=paired_ratio(times[n], times[names[0]]),
        )
        for n in names
    ]
    ratios = {f"{n}/{names[0]} train step": ratio_entry(paired_ratio(times[n], times[names[0]])) for n in names[1:]}
    write_json(args.json, "train_step", args, rows, ratios, device, extra={"data_ms_per_batch": data_ms}, argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
