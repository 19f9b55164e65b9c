"""Where a forward spends its time: per-part shares (module hooks) and the top operators (torch.profiler).

    python -m benchmarks.profile --models deit_small_patch16_224,deit_small_fdam_patch16_224 --batch 8 --threads 1
    python -m benchmarks.profile --models convformer_s18,spanetv2_s18_pure --dtype bfloat16 --json prof.json

Per part: inclusive time of every module of the listed classes (``--parts``), summed per class over
one forward (eval, inference mode, after ``--warmup`` forwards), as a share of the whole forward;
nested parts (AttInv inside Attention) are counted in both. Forward MACs per part come from
``freqkit.flops`` where it knows the model. Operators: self CPU time of the top ``--top`` aten ops.
``--dtype bfloat16`` casts the weights and input (``--autocast`` instead runs float32 weights
under bf16 autocast, as ``benchmarks.fdam`` does).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
from torch import nn

from benchmarks._common import add_common_args, describe, write_json

DEFAULT_PARTS = "Attention,AttInv,GFSA,FreqScale,Mlp,LayerNorm,GroupNorm,SPAM,SPAMv2,SepConv,PatchEmbed,Conv2d,Linear"


def part_times(model: nn.Module, run, parts: set[str], repeats: int) -> tuple[dict[str, float], float]:
    """Median over ``repeats`` forwards of the summed inclusive seconds per module class, and of the whole forward."""
    acc: dict[str, float] = defaultdict(float)
    starts: dict[int, float] = {}
    handles = []
    for m in model.modules():
        name = type(m).__name__
        if name not in parts:
            continue

        def pre(mod, args, key=id(m)):
            starts[key] = time.perf_counter()

        def post(mod, args, out, key=id(m), name=name):
            acc[name] += time.perf_counter() - starts.pop(key)

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    per_run: list[dict[str, float]] = []
    totals = []
    try:
        for _ in range(repeats):
            acc.clear()
            t0 = time.perf_counter()
            run()
            totals.append(time.perf_counter() - t0)
            per_run.append(dict(acc))
    finally:
        for h in handles:
            h.remove()
    names = sorted({k for r in per_run for k in r})
    return {k: statistics.median(r.get(k, 0.0) for r in per_run) for k in names}, statistics.median(totals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="deit_small_patch16_224,deit_small_fdam_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--autocast", action="store_true", help="float32 weights under bf16 autocast")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="forwards with part hooks (median)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--parts", default=DEFAULT_PARTS)
    parser.add_argument("--kw", default="", help="model kwargs as k=v,k=v (e.g. fused=False)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import timm
    from torch.profiler import ProfilerActivity, profile

    import freqkit
    import freqkit.models  # noqa: F401  (registers freqkit's models)

    kw = {}
    for item in filter(None, args.kw.split(",")):
        k, _, v = item.partition("=")
        kw[k] = {"True": True, "False": False}.get(v, v)
    parts = set(args.parts.split(","))
    dtype = getattr(torch, args.dtype)
    print(
        f"profile on {describe(torch.device('cpu'))}, torch {torch.__version__}; batch {args.batch}, {args.img_size} px, "
        f"{args.dtype}{' (autocast bf16)' if args.autocast else ''}"
    )
    rows = []
    for name in filter(None, args.models.split(",")):
        torch.manual_seed(0)
        model = timm.create_model(name, **kw).eval().to(dtype)
        x = torch.randn(args.batch, 3, args.img_size, args.img_size, dtype=dtype)

        def run(model=model, x=x) -> None:  # bound now: this iteration's model and input
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast):
                model(x)

        for _ in range(args.warmup):
            run()
        shares, total = part_times(model, run, parts, args.repeats)
        try:
            macs = freqkit.flops(model, (1, 3, args.img_size, args.img_size))
            by_kind = {k: v * args.batch for k, v in macs.by_kind.items()}
            gmacs = macs.total * args.batch / 1e9
        except Exception as err:  # noqa: BLE001  (a model the counter does not know: times only)
            by_kind, gmacs = {"error": str(err)}, float("nan")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        op_total = sum(e.self_cpu_time_total for e in ops)
        print(f"\n== {name}: {total * 1e3:.1f} ms per forward, {gmacs:.2f} GMACs")
        print(f"  {'part (inclusive, summed)':<28}{'ms':>9}{'share':>8}")
        for k, v in sorted(shares.items(), key=lambda kv: -kv[1]):
            print(f"  {k:<28}{v * 1e3:>9.1f}{v / total:>8.1%}")
        print(f"  {'operator (self)':<44}{'ms':>9}{'share':>8}{'calls':>7}")
        top = []
        for e in ops[: args.top]:
            print(f"  {e.key[:44]:<44}{e.self_cpu_time_total / 1e3:>9.1f}{e.self_cpu_time_total / op_total:>8.1%}{e.count:>7}")
            top.append(dict(op=e.key, self_ms=e.self_cpu_time_total / 1e3, share=e.self_cpu_time_total / op_total, calls=e.count))
        rows.append(
            dict(
                model=name,
                forward_ms=total * 1e3,
                gmacs=gmacs,
                macs_by_kind=by_kind,
                parts_ms={k: v * 1e3 for k, v in shares.items()},
                parts_share={k: v / total for k, v in shares.items()},
                top_ops=top,
            )
        )
    write_json(args.json, "profile", args, rows, {}, argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
