"""``SpectralMonitor``: watch each layer's spectrum move as a model trains, in any training loop.

    monitor = freqkit.SpectralMonitor(model, probe, every=50, writer=SummaryWriter("tb"), path="run/monitor.jsonl")
    for step in range(1, steps + 1):
        ...; optimizer.step()
        monitor.step(step)                    # every 50 steps: one record of per-layer metrics
    monitor.plot()                            # {"by_layer": Figure, "by_step": Figure}

Every ``every`` steps the monitor runs the model once on a fixed probe batch (B, 3, H, W) and records,
per captured layer in depth order, the same per-layer numbers :func:`freqkit.analyze` reports for that
batch: by default ``hf_ratio``, ``cosine_similarity`` and ``effective_rank``; on request also
``hf_log_amplitude``, ``rank_collapse_residual`` and ``attention_entropy`` (mean over heads of the
per-head entropy). Layers, prefix tokens and the cutoff follow ``analyze``; the capture is
:func:`freqkit.probe.capture`.

It does not change training: the pass runs under ``torch.no_grad`` in eval mode and then restores the
mode of every submodule; the global RNG states (torch CPU and CUDA, NumPy, ``random``) are saved and
restored around it, and eval mode moves no BatchNorm statistic, so a seeded loop ends on bitwise the
same weights with or without the monitor. ``torch.compile`` and DistributedDataParallel wrappers are
unwrapped (the plain module runs, so no recompilation and no collective call); under an initialized
``torch.distributed`` group only rank 0 measures and logs, the other ranks return at once.

History file (``path=``): JSON lines. The first line is a header (schema, model, layer names, metrics,
settings), then one line per record, appended and flushed (fsync) as it is measured. A kill can leave
at most a torn last line, which loading skips and the next monitor on that file removes. A record at
step k drops the records at steps >= k already in the file (a rerun or a resumed run repeats them), and
:func:`truncate_history` cuts a file back to a checkpoint's step.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from freqkit.errors import FreqkitError, ParameterError
from freqkit.io import atomic_write_text, check_writable_file, json_text

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure
    from torch import nn

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "MonitorHistory",
    "SpectralMonitor",
    "load_history",
    "monitor_curves",
    "over_training_figure",
    "truncate_history",
]

SCHEMA = "freqkit.monitor"
SCHEMA_VERSION = 1
# metric -> description (the first five are freqkit.analyze's per-layer scalars)
METRICS: dict[str, str] = {
    "hf_ratio": "share of spectral energy above the cutoff radius",
    "cosine_similarity": "mean pairwise |cosine| between spatial tokens (over-smoothing)",
    "effective_rank": "effective rank of the (N, C) spatial-token matrix",
    "hf_log_amplitude": "relative log amplitude at the highest frequency",
    "rank_collapse_residual": "relative rank-collapse residual",
    "attention_entropy": "attention entropy (nats), mean over heads",
}
DEFAULT_METRICS = ("hf_ratio", "cosine_similarity", "effective_rank")
TAG_PREFIX = "spectral"


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@contextmanager
def _rng_kept(device: "torch.device") -> Iterator[None]:
    """Save the global RNG states (torch CPU and the model's CUDA device, NumPy, random) and put them back after."""
    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _backbone(model: "nn.Module", layers: Optional[Sequence[str]]) -> "nn.Module":
    """The module to capture: ``model`` without compile / DDP / EMA wrappers, or, when it has no layers ``capture``
    knows (a LightningModule holding a ViT), its first submodule that has them."""
    from timm.utils import unwrap_model

    from freqkit.probe import default_layers

    net = unwrap_model(model)
    if layers is not None:
        return net
    try:
        default_layers(net)
        return net
    except FreqkitError:
        pass
    for _, sub in net.named_modules():
        sub = unwrap_model(sub)
        try:
            default_layers(sub)
        except FreqkitError:
            continue
        return sub
    return net  # capture names the problem


def _tag_labels(kinds: Sequence[str]) -> list[str]:
    """TensorBoard tag label of each layer: block03 for a ViT block, stage02 for a stage (zero-padded: sorted in order)."""
    width = max(2, len(str(len(kinds) - 1)))
    return [f"{'block' if k == 'tokens' else 'stage'}{i:0{width}d}" for i, k in enumerate(kinds)]


def _clean(v: float) -> Optional[float]:
    return float(v) if math.isfinite(v) else None


def _layer_values(cap: Any, metrics: Sequence[str], cutoff: float) -> dict[str, list[Optional[float]]]:
    """Per layer, the mean over the probe images of each metric (as analyze computes it); None where a layer is not finite."""
    import torch

    from freqkit import spectral as S

    out: dict[str, list[Optional[float]]] = {m: [None] * len(cap.layers) for m in metrics}
    ok = [i for i, layer in enumerate(cap.layers) if bool(torch.isfinite(layer.spatial_map()).all())]
    tokens = {i: cap.layers[i].spatial_tokens() for i in ok}
    maps = {i: cap.layers[i].spatial_map() for i in ok}

    def per_layer(fn, source: dict[int, torch.Tensor]) -> dict[int, float]:
        if not source:
            return {}
        shapes = {tuple(t.shape) for t in source.values()}
        if len(shapes) == 1:
            # one batched call over all layers: the SVDs dominate, and batching them is faster
            idx = list(source)
            stacked = torch.stack([source[i] for i in idx])
            vals = fn(stacked.flatten(0, 1)).view(len(idx), -1).double().mean(dim=1)
            return {i: float(v) for i, v in zip(idx, vals)}
        return {i: float(fn(t).double().mean()) for i, t in source.items()}

    computed: dict[str, dict[int, float]] = {}
    for m in metrics:
        if m == "hf_ratio":
            computed[m] = per_layer(lambda x: S.high_frequency_ratio(x, cutoff), maps)
        elif m == "cosine_similarity":
            computed[m] = per_layer(S.token_cosine_similarity, tokens)
        elif m == "effective_rank":
            computed[m] = per_layer(S.effective_rank, tokens)
        elif m == "rank_collapse_residual":
            computed[m] = per_layer(S.rank_collapse_residual, tokens)
        elif m == "hf_log_amplitude":
            computed[m] = {i: float(S.high_frequency_log_amplitude(maps[i])) for i in ok}
        elif m == "attention_entropy":
            computed[m] = {
                i: float(S.attention_entropy(cap.layers[i].attn).double().mean()) for i in ok if cap.layers[i].attn is not None
            }
    for m, vals in computed.items():
        for i, v in vals.items():
            out[m][i] = _clean(v)
    return out


class MonitorHistory(Sequence):
    """The records of a :class:`SpectralMonitor`: ``[{"step": k, "<metric>": [one value per layer, depth order]}, ...]``.

    ``layers`` are the captured module names, ``kinds`` "tokens" (ViT block) or "map" (stage), ``metrics`` the
    recorded metrics, ``settings`` how they were measured. Values a layer could not give (no attention, or not
    finite) are None.
    """

    def __init__(
        self,
        layers: Sequence[str] = (),
        metrics: Sequence[str] = DEFAULT_METRICS,
        records: Sequence[Mapping[str, Any]] = (),
        kinds: Optional[Sequence[str]] = None,
        model: str = "",
        settings: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.layers = list(layers)
        self.kinds = list(kinds) if kinds is not None else ["tokens"] * len(self.layers)
        self.metrics = list(metrics)
        self.model = model
        self.settings = dict(settings or {})
        self.records: list[dict[str, Any]] = [dict(r) for r in records]

    def __getitem__(self, index):  # type: ignore[override]
        return self.records[index]

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"MonitorHistory(model={self.model!r}, layers={len(self.layers)}, metrics={self.metrics}, records={len(self.records)})"

    @property
    def steps(self) -> list[int]:
        """The step of each record."""
        return [int(r["step"]) for r in self.records]

    @property
    def labels(self) -> list[str]:
        """Short layer labels (block00, ... / stage00, ...), as in the TensorBoard tags."""
        return _tag_labels(self.kinds)

    def series(self, metric: str) -> list[list[Optional[float]]]:
        """One metric as (records, layers) nested lists."""
        if metric not in self.metrics:
            raise ParameterError("metric", f"{metric!r} was not recorded; use one of {', '.join(self.metrics)}")
        return [list(r[metric]) for r in self.records]

    def header(self) -> dict[str, Any]:
        """Everything but the records (the first line of a history file)."""
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "model": self.model,
            "layers": self.layers,
            "kinds": self.kinds,
            "metrics": self.metrics,
            "settings": self.settings,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"schema", "version", "model", "layers", "kinds", "metrics", "settings", "records"}``."""
        return {**self.header(), "records": self.records}

    def to_json(self, path: Union[str, os.PathLike, None] = None) -> str:
        """The history as JSON text; with ``path`` also written there (atomically)."""
        return json_text(self.to_dict(), path)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MonitorHistory":
        """Inverse of :meth:`to_dict`."""
        if d.get("schema") != SCHEMA:
            raise FreqkitError(f"not a freqkit monitor history (schema {d.get('schema')!r}); pass a file SpectralMonitor wrote")
        if int(d.get("version", 0)) > SCHEMA_VERSION:
            raise FreqkitError(
                f"monitor history version {d.get('version')} is newer than this freqkit reads ({SCHEMA_VERSION}); upgrade freqkit"
            )
        return cls(
            layers=d["layers"],
            metrics=d["metrics"],
            records=d.get("records", ()),
            kinds=d.get("kinds"),
            model=d.get("model", ""),
            settings=d.get("settings"),
        )

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "MonitorHistory":
        """A history from :meth:`to_json` output or a monitor's JSON-lines file (a torn last line is skipped)."""
        return _read(Path(path))[0]

    def plot(self, metrics: Optional[Sequence[str]] = None) -> dict[str, "Figure"]:
        """Two views, one panel per metric: ``by_layer`` (metric vs layer, one line per record coloured by step) and
        ``by_step`` (metric vs step, one line per layer coloured by depth)."""
        return {"by_layer": _plot_by_layer(self, metrics), "by_step": _plot_by_step(self, metrics)}

    def _repr_html_(self) -> str:
        from freqkit.render import escape, figure_png, figure_tag, kv_table

        facts = {
            "model": self.model,
            "layers": len(self.layers),
            "records": len(self.records),
            "steps": f"{self.steps[0]}..{self.steps[-1]}" if self.records else "-",
            **self.settings,
        }
        parts = [f"<h3>Spectral monitor: {escape(self.model)}</h3>", kv_table(facts)]
        if self.records:
            for name, fig in self.plot().items():
                parts.append(figure_tag(name, figure_png(fig), "per-layer metrics on the probe batch"))
        return "\n".join(parts)


def _read(path: Path) -> tuple[MonitorHistory, bool]:
    """(history, clean) of a JSON or JSON-lines history file; ``clean`` is False when a torn or stray line was skipped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FreqkitError(f"monitor history {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FreqkitError(f"cannot read monitor history {path} ({err})") from None
    stripped = text.lstrip()
    if stripped.startswith("{") and "\n{" not in stripped.strip():
        try:
            return MonitorHistory.from_dict(json.loads(stripped)), True  # one JSON document (to_json)
        except ValueError:
            pass
    lines = text.splitlines()
    clean = text.endswith("\n") or not text
    header = None
    records: list[dict[str, Any]] = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            clean = False
            continue
        if header is None:
            header = rec
        elif isinstance(rec, dict) and isinstance(rec.get("step"), int):
            records.append(rec)
        else:
            clean = False
    if not isinstance(header, dict):
        raise FreqkitError(f"monitor history {path} has no header line; pass a file SpectralMonitor wrote")
    return MonitorHistory.from_dict({**header, "records": records}), clean


def load_history(path: Union[str, os.PathLike]) -> MonitorHistory:
    """:meth:`MonitorHistory.load`."""
    return MonitorHistory.load(path)


def _write_jsonl(path: Path, history: MonitorHistory) -> None:
    lines = [json.dumps(history.header())] + [json.dumps(r) for r in history.records]
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def truncate_history(path: Union[str, os.PathLike], step: int) -> None:
    """Keep the records of a history file up to ``step`` (a resumed checkpoint's), drop torn lines; no file: nothing."""
    p = Path(path)
    if not p.is_file():
        return
    try:
        history, _ = _read(p)
    except FreqkitError:
        p.unlink()  # not a history (a header torn at its first write): the resumed run starts it again
        return
    history.records = [r for r in history.records if int(r["step"]) <= int(step)]
    _write_jsonl(p, history)


class SpectralMonitor:
    """Record per-layer spectral metrics of ``model`` on a fixed ``probe`` batch every ``every`` steps (see module docs).

    ``probe``: images (B, 3, H, W), preprocessed as the model expects (moved to the model's device and dtype at
    each measurement). ``metrics``: names of :data:`METRICS`. ``layers``: module names (default: every ViT block or
    stage, as ``analyze``). ``writer``: anything with ``add_scalar(tag, value, global_step)``, e.g. a TensorBoard
    ``SummaryWriter``: one scalar per layer and metric, tag ``spectral/<metric>/<block03>``, and when it has
    ``add_figure`` the ``by_layer`` figure every ``figure_every`` records. ``path``: a JSON-lines history file
    (continued when it exists). ``cutoff``: the high-frequency radius, as in ``analyze``.
    """

    def __init__(
        self,
        model: "nn.Module",
        probe: "torch.Tensor",
        every: int = 50,
        metrics: Sequence[str] = DEFAULT_METRICS,
        layers: Optional[Sequence[str]] = None,
        writer: Any = None,
        path: Union[str, os.PathLike, None] = None,
        *,
        cutoff: float = 0.5,
        figure_every: int = 5,
        name: Optional[str] = None,
    ) -> None:
        import torch
        from torch import nn

        if not isinstance(model, nn.Module):
            raise ParameterError("model", f"must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(probe, (tuple, list)) and probe and isinstance(probe[0], torch.Tensor):
            probe = probe[0]  # an (images, targets) batch
        if not isinstance(probe, torch.Tensor) or probe.ndim != 4 or not probe.is_floating_point():
            shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise ParameterError(
                "probe", f"must be a float image batch (B, 3, H, W), got {shape}; add a batch dimension with x[None]"
            )
        if not bool(torch.isfinite(probe).all()):
            raise ParameterError("probe", "holds NaN or inf; pass finite images")
        if isinstance(every, bool) or int(every) != every or int(every) < 1:
            raise ParameterError("every", f"must be a positive number of steps, got {every!r}")
        if isinstance(metrics, str):
            metrics = [metrics]
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise ParameterError("metrics", f"{unknown or list(metrics)} unknown or empty; use some of {', '.join(METRICS)}")
        if not 0.0 <= float(cutoff) <= 1.5:
            raise ParameterError(
                "cutoff", f"{cutoff} is outside [0, 1.5]; the normalized radius is 1 at the Nyquist frequency, default 0.5"
            )
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise ParameterError(
                "writer", f"{type(writer).__name__} has no add_scalar(tag, value, step); pass a TensorBoard SummaryWriter"
            )
        if int(figure_every) < 0:
            raise ParameterError("figure_every", f"must be >= 0 (0: no figures), got {figure_every!r}")
        self.model = model
        self.net = _backbone(model, layers)
        self.probe = probe.detach().clone()
        self.every = int(every)
        self.metrics = list(dict.fromkeys(metrics))
        self.layers = None if layers is None else list(layers)
        self.writer = writer
        self.cutoff = float(cutoff)
        self.figure_every = int(figure_every)
        self.path = None if path is None else Path(path)
        self._history: Optional[MonitorHistory] = None
        self._name = name
        self._last_step: Optional[int] = None
        if self.path is not None and _rank() == 0:  # the other ranks never write
            check_writable_file(self.path, "path")
            if self.path.is_file() and self.path.stat().st_size > 0:
                old, clean = _read(self.path)
                if old.metrics != self.metrics or (self.layers is not None and old.layers != self.layers):
                    raise ParameterError(
                        "path", f"{str(self.path)!r} holds a history of other metrics or layers; pass a new path or delete it"
                    )
                self._history = old
                if not clean:
                    _write_jsonl(self.path, old)  # a torn last line would merge with the next record

    @property
    def history(self) -> MonitorHistory:
        """The records so far (a :class:`MonitorHistory`; empty before the first measurement)."""
        if self._history is None:
            return MonitorHistory(
                layers=self.layers or (), metrics=self.metrics, model=self._model_name(), settings=self._settings()
            )
        return self._history

    def _model_name(self) -> str:
        if self._name:
            return self._name
        from freqkit.analysis import model_name

        return model_name(self.net)

    def _settings(self) -> dict[str, Any]:
        return {
            "every": self.every,
            "cutoff": self.cutoff,
            "probe_images": int(self.probe.shape[0]),
            "image_size": [int(self.probe.shape[-2]), int(self.probe.shape[-1])],
            "tokens": "spatial (prefix tokens dropped)",
        }

    def step(self, step: int, force: bool = False) -> Optional[dict[str, Any]]:
        """Call after optimizer step ``step``: measures when ``step`` is a multiple of ``every`` (or ``force``) and
        was not measured yet; returns the record, else None (also on ranks other than 0)."""
        if not (force or int(step) % self.every == 0) or step == self._last_step or _rank() != 0:
            return None
        return self.measure(step)

    def measure(self, step: int) -> dict[str, Any]:
        """Measure now and record it at ``step``: ``{"step": step, "<metric>": [per layer]}``; logs and appends it."""
        import torch

        from freqkit.probe import capture

        net = self.net
        param = next(iter(net.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else self.probe.dtype
        modes = [(m, m.training) for m in net.modules()]
        with _rng_kept(device), torch.no_grad():
            try:
                net.eval()
                x = self.probe.to(device=device, dtype=dtype)
                cap = capture(net, x, attention="attention_entropy" in self.metrics, layers=self.layers)
            finally:
                for m, mode in modes:
                    m.training = mode  # each module's own flag: a model may keep some parts in eval while training
            values = _layer_values(cap, self.metrics, self.cutoff)
        record: dict[str, Any] = {"step": int(step), **values}
        if self._history is None:
            kinds = ["tokens" if layer.is_tokens else "map" for layer in cap.layers]
            self._history = MonitorHistory(
                layers=cap.names, metrics=self.metrics, kinds=kinds, model=self._model_name(), settings=self._settings()
            )
        del cap
        self._append(record)
        self._last_step = int(step)
        self._log(record)
        return record

    def _append(self, record: dict[str, Any]) -> None:
        history = self._history
        assert history is not None
        stale = any(int(r["step"]) >= record["step"] for r in history.records)
        if stale:  # a rerun or a resumed run repeats these steps
            history.records = [r for r in history.records if int(r["step"]) < record["step"]]
        history.records.append(record)
        if self.path is None:
            return
        if stale or not self.path.is_file() or self.path.stat().st_size == 0:
            _write_jsonl(self.path, history)
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def scalars(self, record: Mapping[str, Any]) -> dict[str, float]:
        """TensorBoard-style scalars of one record: ``{"spectral/<metric>/<label>": value}`` (None values left out)."""
        labels = self.history.labels
        return {
            f"{TAG_PREFIX}/{m}/{label}": float(v) for m in self.metrics for label, v in zip(labels, record[m]) if v is not None
        }

    def _log(self, record: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(record["step"])
        for tag, value in self.scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        if (
            self.figure_every
            and callable(getattr(self.writer, "add_figure", None))
            and (len(self.history) - 1) % self.figure_every == 0
        ):
            self.writer.add_figure(f"{TAG_PREFIX}/by_layer", _plot_by_layer(self.history, None), step)

    def plot(self, metrics: Optional[Sequence[str]] = None) -> dict[str, "Figure"]:
        """:meth:`MonitorHistory.plot` of the history so far."""
        return self.history.plot(metrics)

    def to_dict(self) -> dict[str, Any]:
        """:meth:`MonitorHistory.to_dict`."""
        return self.history.to_dict()

    def to_json(self, path: Union[str, os.PathLike, None] = None) -> str:
        """:meth:`MonitorHistory.to_json`."""
        return self.history.to_json(path)

    def _repr_html_(self) -> str:
        return self.history._repr_html_()

    load_history = staticmethod(load_history)


def _metric_list(history: MonitorHistory, metrics: Optional[Sequence[str]]) -> list[str]:
    chosen = list(history.metrics if metrics is None else metrics)
    bad = [m for m in chosen if m not in history.metrics]
    if bad or not chosen:
        raise ParameterError("metrics", f"{bad or chosen} were not recorded; use some of {', '.join(history.metrics)}")
    return chosen


def _nan(v: Optional[float]) -> float:
    return float("nan") if v is None else float(v)


def _plot_by_layer(history: MonitorHistory, metrics: Optional[Sequence[str]]) -> "Figure":
    import matplotlib
    from matplotlib import cm, colors
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    chosen = _metric_list(history, metrics)
    fig = Figure(figsize=(3.6 * len(chosen) + 0.8, 3.4), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(chosen), squeeze=False)[0]
    steps = history.steps
    norm = colors.Normalize(vmin=min(steps, default=0), vmax=max(max(steps, default=1), min(steps, default=0) + 1))
    cmap = matplotlib.colormaps["viridis"]
    x = list(range(1, len(history.layers) + 1))
    for ax, m in zip(axes, chosen):
        for rec in history.records:
            ax.plot(x, [_nan(v) for v in rec[m]], marker="o", ms=3, lw=1.2, color=cmap(norm(rec["step"])))
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="step")
    fig.suptitle(f"{history.model}: per-layer metrics, coloured by step", fontsize=10)
    return fig


def _plot_by_step(history: MonitorHistory, metrics: Optional[Sequence[str]]) -> "Figure":
    import matplotlib
    from matplotlib.figure import Figure

    chosen = _metric_list(history, metrics)
    fig = Figure(figsize=(3.6 * len(chosen) + 1.4, 3.4), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(chosen), squeeze=False)[0]
    cmap = matplotlib.colormaps["plasma"]
    n = max(1, len(history.layers) - 1)
    steps = history.steps
    for ax, m in zip(axes, chosen):
        for i, label in enumerate(history.labels):
            ax.plot(steps, [_nan(r[m][i]) for r in history.records], lw=1.2, color=cmap(0.85 * i / n), label=label)
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if history.layers:
        axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"{history.model}: per-layer metrics over training", fontsize=10)
    return fig


# ---- freqkit compare: the "over training" figure (mean over seeds of each run's monitor history) ----

OVER_TRAINING = (("hf_ratio", "high-frequency ratio"), ("cosine_similarity", "token cosine similarity"))


def monitor_curves(path: Union[str, os.PathLike]) -> Optional[dict[str, Any]]:
    """The over-training curves of one run's history file ``{"steps", "layers", <metric>: (steps, layers)}``, or None."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        h = load_history(p)
    except FreqkitError:
        return None
    keys = [k for k, _ in OVER_TRAINING if k in h.metrics]
    if not h.records or not keys:
        return None
    return {"steps": h.steps, "layers": h.labels, **{k: h.series(k) for k in keys}}


def _mean_over_seeds(curves: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[list[float]]]:
    """(steps every seed recorded, (steps, layers) mean over seeds) of one metric."""
    common = sorted(set.intersection(*(set(c["steps"]) for c in curves)))
    rows = []
    for s in common:
        per_seed = [c[key][c["steps"].index(s)] for c in curves]
        rows.append([_mean_known([seed[i] for seed in per_seed]) for i in range(len(per_seed[0]))])
    return common, rows


def _mean_known(values: Sequence[Optional[float]]) -> float:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else float("nan")


def over_training_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> Optional["Figure"]:
    """Per model (rows) the high-frequency ratio and the token similarity of each layer against the step (mean over
    seeds), from the runs' ``"monitor"`` curves (:func:`monitor_curves`); None when no run has any."""
    import matplotlib
    from matplotlib.figure import Figure

    models = {name: [r["monitor"] for r in rs if r.get("monitor")] for name, rs in runs.items()}
    models = {name: cs for name, cs in models.items() if cs}
    if not models:
        return None
    fig = Figure(figsize=(9.5, 2.6 * len(models) + 0.6), dpi=110, layout="constrained")
    axes = fig.subplots(len(models), len(OVER_TRAINING), squeeze=False, sharex=True, sharey="col")  # models compare by eye
    cmap = matplotlib.colormaps["plasma"]
    for row, (name, curves) in zip(axes, models.items()):
        for ax, (key, title) in zip(row, OVER_TRAINING):
            usable = [c for c in curves if key in c]
            if not usable:
                ax.set_visible(False)
                continue
            steps, mean = _mean_over_seeds(usable, key)
            layers = usable[0]["layers"]
            n = max(1, len(layers) - 1)
            for i, label in enumerate(layers):
                ax.plot(steps, [v[i] for v in mean], lw=1.3, color=cmap(0.85 * i / n), label=label)
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
        row[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for ax in axes[-1]:
        ax.set_xlabel("step")
    seeds = max(len(cs) for cs in models.values())
    fig.suptitle(
        f"over training: each layer on the fixed probe images (mean over {seeds} seed{'s' if seeds > 1 else ''})", fontsize=10
    )
    return fig
