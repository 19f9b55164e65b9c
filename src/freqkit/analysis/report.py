"""Report objects of :func:`freqkit.analyze`: per-layer statistics of one or more models.

A :class:`Report` holds one :class:`ModelReport` per analysed model (several models overlay their
curves in every figure) and the settings used. It saves to JSON (``to_json`` / ``from_json``, with a
schema version), PNG figures (``plot``), one self-contained HTML page (``to_html``, inline in Jupyter
through ``_repr_html_``) and a text table (``table``); ``save(folder)`` writes all of them and ``Report.load(folder)``
reads the report back. All numbers are plain Python floats and lists, so a report needs no torch to load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from freqkit.analysis.metrics import HEAD_METRICS, METRICS, layer_cells, layer_columns
from freqkit.errors import FreqkitError
from freqkit.io import atomic_write_text, dumps
from freqkit.limits import loads_json
from freqkit.render import write_pngs

__all__ = ["SCHEMA", "SCHEMA_VERSION", "LayerStats", "ModelReport", "Report", "METRICS", "HEAD_METRICS"]

SCHEMA = "freqkit.report"
SCHEMA_VERSION = 2  # 2 adds per-head maps, effective receptive fields and CKA matrices

# settings that define the numbers: reports can only be merged when these agree
_METRIC_SETTINGS = ("cutoff", "bins", "global_response_mode", "spectrum_eps", "effective_rank_center", "cosine_absolute")


@dataclass
class LayerStats:
    """Statistics of one captured layer, averaged over the analysed images.

    ``spectrum`` is the centred (H, W) log-amplitude spectrum; ``radial_profile`` its ring means
    (``bins``); ``relative_log_amplitude`` the half-diagonal curve (K,). With attention captured,
    ``local_response`` = {"mean", "std": (bins,), "dc": float} summarizes log(1 + |F(W_q)|) over
    queries and heads, and ``global_response`` is the radial profile (bins,) of R = |F(A V)| / |F(V)|;
    ``heads`` maps each key of :data:`HEAD_METRICS` to one value per head. With the effective
    receptive field computed, ``erf`` = {"map": (h, w) mean |input gradient| of the centre unit (at
    most 64 px a side), "image_size": [H, W], "radial_spectrum": (bins,) ring means of its log
    amplitude spectrum}.
    """

    name: str
    kind: str  # "tokens" (ViT block) or "map" (conv / MetaFormer stage)
    grid_size: tuple[int, int]
    channels: int
    num_prefix_tokens: int
    hf_ratio: float
    hf_log_amplitude: float
    effective_rank: float
    cosine_similarity: float
    rank_collapse_residual: float
    relative_log_amplitude: list[float]
    radial_profile: list[float]
    spectrum: list[list[float]]
    local_response: Optional[dict[str, Any]] = None
    global_response: Optional[list[float]] = None
    heads: Optional[dict[str, list[float]]] = None
    erf: Optional[dict[str, Any]] = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerStats":
        """Inverse of ``dataclasses.asdict``."""
        d = dict(d)
        d["grid_size"] = tuple(int(g) for g in d["grid_size"])
        return cls(**d)


@dataclass
class ModelReport:
    """The per-layer statistics of one model, the cross-layer similarity matrix and model facts (``info``).

    ``cross_layer_similarity`` is (L, L) as nested lists, or None when the layers differ in token
    count or width (hierarchical models). ``cka`` is the (L, L) linear CKA matrix over the dataset
    (tokens as samples, finer grids pooled to the coarsest; None when not computed).
    """

    name: str
    layers: list[LayerStats]
    cross_layer_similarity: Optional[list[list[float]]] = None
    info: dict[str, Any] = field(default_factory=dict)
    cka: Optional[list[list[float]]] = None

    @property
    def has_attention(self) -> bool:
        """True when the attention responses were captured for at least one layer."""
        return any(layer.local_response is not None for layer in self.layers)

    def series(self, metric: str) -> list[float]:
        """One scalar metric (a key of :data:`METRICS`) per layer, in depth order."""
        if metric not in METRICS:
            raise FreqkitError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")
        return [float(getattr(layer, metric)) for layer in self.layers]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        d = asdict(self)
        for layer in d["layers"]:
            layer["grid_size"] = list(layer["grid_size"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelReport":
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=d["name"],
            layers=[LayerStats.from_dict(x) for x in d["layers"]],
            cross_layer_similarity=d.get("cross_layer_similarity"),
            info=dict(d.get("info", {})),
            cka=d.get("cka"),
        )


@dataclass
class Report:
    """Spectral diagnostics of one or more models: ``models`` (one :class:`ModelReport` each) and ``settings``.

    Several models in one report overlay their curves in each figure. Build one with
    ``freqkit.analyze({"a": m1, "b": m2}, images)`` or combine reports with :meth:`merge`.
    ``model_cka`` lists the model-by-model CKA matrices: {"a", "b", "grid", "matrix" (L_a, L_b)};
    ``methods`` the data of the method figures (:func:`freqkit.analysis.methods.method_figures_data`).
    """

    models: list[ModelReport]
    settings: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    model_cka: list[dict[str, Any]] = field(default_factory=list)
    # what the models' FDAM / SPAM modules apply and one layer's feature maps (freqkit.analysis.methods)
    methods: Optional[dict[str, Any]] = None

    # ---- access -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Model names, in order."""
        return [m.name for m in self.models]

    def __getitem__(self, name: str | int) -> ModelReport:
        if isinstance(name, int):
            return self.models[name]
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model named {name!r} in this report; models: {self.names}")

    def __len__(self) -> int:
        return len(self.models)

    # ---- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready) with the schema name and version."""
        from freqkit import __version__

        return {
            "schema": SCHEMA,
            "schema_version": self.schema_version,
            "freqkit_version": __version__,
            "settings": _jsonable(self.settings),
            "models": [_jsonable(m.to_dict()) for m in self.models],
            "model_cka": _jsonable(self.model_cka),
            "methods": _jsonable(self.methods),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        """Inverse of :meth:`to_dict`; refuses other schemas and newer versions."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise FreqkitError(
                "this JSON is not a freqkit report (no 'schema': 'freqkit.report'); pass a file written by Report.to_json"
            )
        version = int(d.get("schema_version", -1))
        if version < 1 or version > SCHEMA_VERSION:
            raise FreqkitError(
                f"report schema version {version} is not supported (this freqkit reads 1..{SCHEMA_VERSION}); upgrade freqkit"
            )
        return cls(
            models=[ModelReport.from_dict(m) for m in d["models"]],
            settings=dict(d.get("settings", {})),
            schema_version=version,
            model_cka=list(d.get("model_cka", [])),
            methods=d.get("methods"),
        )

    def to_json(self, path: Union[str, Path, None] = None) -> Union[str, Path]:
        """The report as JSON text; with ``path``, written there instead (atomically, creating its folder) and the path returned."""
        text = dumps(self.to_dict())
        if path is None:
            return text
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, text)

    @classmethod
    def from_json(cls, source: Union[str, Path]) -> "Report":
        """A report from :meth:`to_json` text or from the path of a file it wrote."""
        text = str(source) if isinstance(source, str) and source.lstrip().startswith("{") else None
        if text is None:
            p = Path(source)
            try:
                text = p.read_text()
            except FileNotFoundError:
                raise FreqkitError(f"report {str(p)!r} does not exist; check the path") from None
        try:
            data = loads_json(
                text, "this text" if isinstance(source, str) and source.lstrip().startswith("{") else f"report {str(source)!r}"
            )
        except json.JSONDecodeError as err:
            where = "this text" if isinstance(source, str) and source.lstrip().startswith("{") else f"report {str(source)!r}"
            raise FreqkitError(
                f"{where} is not valid JSON ({err.msg} at line {err.lineno}); pass a file written by Report.to_json"
            ) from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "Report":
        """The report that :meth:`save` wrote into ``folder`` (its ``report.json``; a JSON file path works too)."""
        p = Path(folder)
        return cls.from_json(p / "report.json" if p.is_dir() else p)

    # ---- combining ----------------------------------------------------------------------
    @classmethod
    def merge(cls, *reports: "Report") -> "Report":
        """One report with the models of all ``reports`` (repeated names get a ``-2``, ``-3`` suffix).

        The metric settings (cutoff, bins, ...) must agree; per-run facts (image size, number of
        images, weights) live in each model's ``info`` and may differ. Model-by-model CKA matrices
        are kept only within each report (they need the same images).
        """
        if len(reports) == 1 and not isinstance(reports[0], Report):
            reports = tuple(reports[0])  # merge([r1, r2])
        if not reports:
            raise FreqkitError("Report.merge needs at least one report")
        base = reports[0].settings
        for r in reports[1:]:
            for key in _METRIC_SETTINGS:
                if key in base and key in r.settings and base[key] != r.settings[key]:
                    raise FreqkitError(
                        f"cannot merge reports with different {key} ({base[key]!r} vs {r.settings[key]!r}); rerun analyze with the same {key}"
                    )
        models: list[ModelReport] = []
        seen: dict[str, int] = {}
        for r in reports:
            for m in r.models:
                name = m.name
                if name in seen:
                    seen[name] += 1
                    name = f"{name}-{seen[m.name]}"
                seen.setdefault(name, 1)
                models.append(
                    ModelReport(
                        name=name, layers=m.layers, cross_layer_similarity=m.cross_layer_similarity, info=dict(m.info), cka=m.cka
                    )
                )
        settings = dict(base)
        settings["models"] = [m.name for m in models]
        model_cka = list(reports[0].model_cka) if len(reports) == 1 else []
        return cls(models=models, settings=settings, model_cka=model_cka, methods=_merge_methods([r.methods for r in reports]))

    # ---- text ---------------------------------------------------------------------------
    def table(self, max_rows: Optional[int] = None) -> str:
        """A plain-text per-layer table of every model (first ``max_rows`` layers each, default all)."""
        lines: list[str] = []
        for m in self.models:
            weights = m.info.get("weights")
            lines.append(f"{m.name}" + (f"  [{weights}]" if weights else ""))
            attn = m.has_attention
            cols = ["layer", "grid"] + layer_columns(attn)
            rows = [
                [layer.name, f"{layer.grid_size[0]}x{layer.grid_size[1]}"] + layer_cells(layer, attn)
                for layer in m.layers[: max_rows or None]
            ]
            widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
            lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))))
            for r in rows:
                lines.append("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
            if max_rows and len(m.layers) > max_rows:
                lines.append(f"... ({len(m.layers) - max_rows} more layers)")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def __str__(self) -> str:
        return self.table()

    # ---- figures and HTML ---------------------------------------------------------------
    def plot(self, out_dir: str | Path = "figures") -> list[Path]:
        """Write the PNG figures (per-layer curves, cross-layer heat maps, 2-D spectra, responses) to ``out_dir``."""
        from freqkit.analysis.plots import rendered

        return write_pngs(rendered(self), out_dir)

    def to_html(self, path: str | Path = "report.html") -> Path:
        """Write one self-contained HTML page (figures embedded as base64 PNG, per-layer tables)."""
        from freqkit.analysis.html import render_html

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, render_html(self))

    def _repr_html_(self) -> str:
        """The HTML page's body, figures inline, for Jupyter."""
        from freqkit.analysis.html import render_body

        return render_body(self)

    def save(self, out_dir: str | Path = "freqkit-report", figures: bool = True) -> dict[str, Any]:
        """Write ``report.json``, ``report.html`` and ``figures/*.png`` under ``out_dir`` (only the JSON without ``figures``); returns their paths."""
        from freqkit.analysis.html import render_html
        from freqkit.analysis.plots import rendered

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if not figures:
            return {"json": self.to_json(out / "report.json"), "html": None, "figures": []}
        pngs = rendered(self)  # rendered once for both the PNG files and the HTML page
        return {
            "json": self.to_json(out / "report.json"),
            "html": atomic_write_text(out / "report.html", render_html(self, pngs)),
            "figures": write_pngs(pngs, out / "figures"),
        }


def _merge_methods(parts: list[Optional[dict[str, Any]]]) -> Optional[dict[str, Any]]:
    """Method-figure data of several reports: per-model entries gathered; feature panels only when the images agree."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    out: dict[str, Any] = {"applies": []}
    for p in parts:
        for kind in p.get("applies", []):
            if kind == "features":
                f = p["features"]
                if "features" not in out:
                    out["features"] = {
                        k: (dict(v) if isinstance(v, dict) else list(v) if k == "models" else v) for k, v in f.items()
                    }
                elif out["features"].get("images") == f.get("images"):  # side by side only on the same images
                    out["features"]["models"] += [m for m in f["models"] if m not in out["features"]["models"]]
                    for k, v in f.items():
                        if isinstance(v, dict):
                            out["features"].setdefault(k, {}).update(v)
                else:
                    continue
            else:
                out.setdefault(kind, {}).update(p[kind])
            if kind not in out["applies"]:
                out["applies"].append(kind)
    return out


def _jsonable(obj: Any) -> Any:
    """Tuples -> lists, numpy / torch scalars -> floats, recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        # the bulk of a report (spectra, images) is lists, or lists of lists, of floats: nothing to convert
        if all(type(v) is float for v in obj):
            return list(obj)
        if all(type(v) is list and all(type(u) is float for u in v) for v in obj):
            return [list(v) for v in obj]
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
