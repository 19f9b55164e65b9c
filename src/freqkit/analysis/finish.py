"""The final pass of :func:`freqkit.analyze`: summed statistics -> per-model reports, model-by-model CKA, run settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import nn

from freqkit import spectral as S
from freqkit.analysis.accumulator import Accumulator
from freqkit.analysis.batch_stats import coarsest
from freqkit.analysis.report import LayerStats, ModelReport

__all__ = ["model_report", "model_info", "joint_cka", "run_settings"]

_ERF_STORED = 64  # ERF maps are stored in the report at most this many pixels a side


def model_report(name: str, acc: Accumulator, bins: int, info: dict[str, Any]) -> ModelReport:
    """The per-layer means of ``acc`` as a :class:`ModelReport` (with the cross-layer similarity and CKA when summed)."""
    layers = []
    for i, meta in enumerate(acc.meta):
        spec = acc.mean(i, "spectrum")
        rla = acc.mean(i, "relative_log_amplitude")
        local = None
        if acc.mean(i, "local_mean") is not None:
            local = {
                "mean": acc.mean(i, "local_mean").tolist(),
                "std": acc.mean(i, "local_std").tolist(),
                "dc": float(acc.mean(i, "local_dc")),
            }
        heads = None
        if acc.mean(i, "head_entropy") is not None:
            heads = {k: acc.mean(i, f"head_{k}").tolist() for k in ("hf_share", "entropy", "distance", "effective_rank")}
        erf = None
        erf_map = acc.mean(i, "erf")
        if erf_map is not None:
            h, w = erf_map.shape
            stored = (
                erf_map
                if max(h, w) <= _ERF_STORED
                else F.adaptive_avg_pool2d(erf_map[None, None], (min(h, _ERF_STORED), min(w, _ERF_STORED)))[0, 0]
            )
            erf = {
                "map": stored.tolist(),
                "image_size": [int(h), int(w)],
                # of the full-resolution mean map; the log spectrum's ring means (see radial_profile)
                "radial_spectrum": S.radial_profile(S.spectrum(erf_map[None, None]), bins).tolist(),
            }
        glob = acc.mean(i, "global")
        base = {k: v for k, v in meta.items() if k != "heads"}
        layers.append(
            LayerStats(
                **base,
                hf_ratio=float(acc.mean(i, "hf_ratio")),
                hf_log_amplitude=float(rla[-1]),
                effective_rank=float(acc.mean(i, "effective_rank")),
                cosine_similarity=float(acc.mean(i, "cosine_similarity")),
                rank_collapse_residual=float(acc.mean(i, "rank_collapse_residual")),
                relative_log_amplitude=rla.tolist(),
                # the ring means are linear, so the profile of the mean spectrum is the mean profile
                radial_profile=S.radial_profile(spec, bins).tolist(),
                spectrum=spec.tolist(),
                local_response=local,
                global_response=None if glob is None else glob.tolist(),
                heads=heads,
                erf=erf,
            )
        )
    cross = acc.mean(-1, "cross") if acc.cross_ok else None
    hsic = acc.sums.get("-1/hsic")
    cka = None if hsic is None else S.cka_from_hsic(hsic).tolist()
    if hsic is not None:
        info = dict(info, cka_grid=list(coarsest([m["grid_size"] for m in acc.meta])))
    return ModelReport(
        name=name, layers=layers, cross_layer_similarity=None if cross is None else cross.tolist(), info=info, cka=cka
    )


def model_info(model: nn.Module, acc: Accumulator, image_size: Any, attention: bool, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Facts of one analysed model (class, parameters, layers, images) and the caller's ``extra`` ones."""
    info = {
        "class": type(model).__name__,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "num_layers": len(acc.meta),
        "image_size": image_size,
        "num_images": acc.n,
        "attention": bool(attention) and any(m["heads"] > 0 for m in acc.meta),
    }
    info.update(dict(extra))
    return info


def joint_cka(joint: Accumulator, accs: Mapping[str, Accumulator], names: Sequence[str]) -> list[dict[str, Any]]:
    """The (L_a, L_b) CKA matrix of every pair of models from the joint HSIC sums (empty without them)."""
    hsic = joint.sums.get("-1/hsic")
    if hsic is None:
        return []
    mat = S.cka_from_hsic(hsic)
    offsets, start = [], 0
    for name in names:
        offsets.append((name, start, start + len(accs[name].meta)))
        start += len(accs[name].meta)
    grid = coarsest([coarsest([m["grid_size"] for m in accs[n].meta]) for n in names])
    out = []
    for i, (na, a0, a1) in enumerate(offsets):
        for nb, b0, b1 in offsets[i + 1 :]:
            out.append({"a": na, "b": nb, "grid": list(grid), "matrix": mat[a0:a1, b0:b1].tolist()})
    return out


def run_settings(
    options: Mapping[str, Any], *, image_size: Any, num_images: int, images: str, processes: int, models: Sequence[str]
) -> dict[str, Any]:
    """The report's settings: the metric conventions, the options of the call and what was analysed."""
    cka, erf, layers = options["cka"], options["erf"], options["layers"]
    return {
        "cutoff": float(options["cutoff"]),
        "bins": int(options["bins"]),
        "global_response_mode": "aggregate",
        "spectrum_eps": 1e-6,
        "effective_rank_center": False,
        "cosine_absolute": True,
        "tokens": "spatial (prefix tokens dropped)",
        "cka_samples": "spatial tokens, one image per mini-batch (unbiased HSIC)" if cka else None,
        "attention": bool(options["attention"]),
        "erf": bool(erf) if isinstance(erf, bool) else list(erf),
        "layers": None if layers is None else list(layers),
        "image_size": image_size,
        "num_images": num_images,
        "images": images,
        "batch_size": None if options["batch_size"] is None else int(options["batch_size"]),
        "processes": processes,
        "models": list(models),
    }
