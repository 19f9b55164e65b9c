"""``TrainConfig``: every setting of a training run (saved with each checkpoint)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Sequence

from freqkit.errors import FreqkitError, ParameterError

__all__ = ["TrainConfig", "RESUME_SENSITIVE", "parse_scales", "resolve_config"]

# fields that must match between a checkpoint and the run that resumes it (anything that changes the math);
# what is only watched or logged (log_every, monitor_every, tensorboard, progress) may change on resume
RESUME_SENSITIVE = (
    "model",
    "data",
    "task",
    "steps",
    "global_batch_size",
    "lr",
    "weight_decay",
    "warmup_steps",
    "schedule",
    "min_lr_ratio",
    "layer_decay",
    "freq_lr_mult",
    "clip_grad",
    "amp",
    "seed",
    "img_size",
    "num_classes",
    "drop_path",
    "head_channels",
    "global_batch",
    "beta1",
    "beta2",
    "warmup_start_ratio",
    "crop_size",
    "img_scale",
    "head_norm",
    "head_dropout",
    "aux_channels",
    "aux_weight",
    "init",
    "aux_level",
    "neck",
    "drop_path_schedule",
    "wd_exempt",
    "loss_mean",
    "warmup_style",
    "head_init",
)


def parse_scales(text: Optional[str | Sequence[float]]) -> tuple[float, ...]:
    """'0.5,0.75,1.0' (or a sequence) -> (0.5, 0.75, 1.0); None -> (1.0,). Every factor must be positive."""
    if text is None:
        return (1.0,)
    items = [s for s in text.split(",") if s.strip()] if isinstance(text, str) else list(text)
    try:
        scales = tuple(float(s) for s in items)
    except ValueError:
        raise FreqkitError(f"scale factors must be numbers separated by commas, e.g. 0.5,1.0,1.5; got {text!r}") from None
    if not scales or any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise FreqkitError(f"scale factors must be positive numbers, e.g. 0.5,1.0,1.5; got {text!r}")
    return scales


def _scale_ok(text: str) -> bool:
    parts = str(text).split(",")
    return len(parts) == 2 and all(p.strip().isdigit() and int(p) > 0 for p in parts)


def _opt(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field whose ``help`` (and optional ``flag`` / ``choices`` / ``cli=False``) the CLI turns into a flag."""
    return field(default=default, metadata={"help": help, **cli})


def _check_eval_scales(cfg: "TrainConfig", scales: tuple[float, ...]) -> None:
    """Bound the count of scale factors and the pixels of the largest rescaled image before any evaluation runs."""
    from freqkit.limits import check_limit, limit

    check_limit("eval_scales", len(scales), "eval_scales", " scale factors")
    crop = int(cfg.crop_size or cfg.img_size or 512)
    long, short = cfg.scale or (4 * crop, crop)
    biggest = max(scales)
    pixels = round(long * biggest) * round(short * biggest)
    if pixels > limit("resized_pixels"):
        raise ParameterError(
            "eval_scales",
            f"factor {biggest:g} rescales images to fit {round(long * biggest)}x{round(short * biggest)} = {pixels} pixels, "
            f"above freqkit's limit of {limit('resized_pixels')}; use factors such as 0.5,1.0,1.75, or set FREQKIT_MAX_RESIZED_PIXELS "
            "to raise the limit on purpose",
        )


@dataclass
class TrainConfig:
    """Settings of one training run; the single source of every default and help text (the CLI flags are generated from it)."""

    recipe: Optional[str] = _opt(
        None,
        "start from a named recipe, the FDAM paper's ADE20K UPerNet runs as the authors' released "
        "configs set them: upernet_deit_small_ade20k_160k, upernet_deit_small_fdam_ade20k_160k (no released "
        "config: the DeiT-S baseline's settings with FDAM, freqkit's choice), upernet_deit3_base_ade20k_160k, "
        "upernet_deit3_base_fdam_ade20k_160k; each needs init (the ImageNet weights it starts from, or "
        "'scratch'); any other flag overrides its values; see docs/recipes.md",
    )
    model: str = _opt(
        "vit_mini",
        "model spec BASE[+METHOD...]: BASE is a preset (vit_mini: dim 128, depth 4, patch 8; "
        "vit_micro: dim 32; deit3_base_dense: the released DeiT-III-B dense backbone without FDAM) or a timm / freqkit model name; each +METHOD (fdam, attinv, freqscale, attnscale, "
        "featscale, gfsa) retrofits a ViT base with freqkit.convert, e.g. vit_mini+fdam",
    )
    data: str = _opt(
        "shapes",
        "dataset: shapes[:size=64,train=2000,val=128,seed=0] | textures[:classes=6,size=64,...] | "
        "imagefolder:ROOT (ROOT/train/<class>/*, ROOT/val/<class>/*) | ade20k:ROOT (ADEChallengeData2016 "
        "layout) | pairs:IMAGES:MASKS (matched by file stem)",
    )
    task: Optional[str] = _opt(
        None, "classification or segmentation (default: the dataset's task)", choices=("classification", "segmentation")
    )
    out: str = _opt("freqkit-run", "output folder")
    steps: int = _opt(300, "optimizer steps")
    batch_size: int = _opt(16, "images per process and step; the global batch is batch_size x world size")
    global_batch: Optional[int] = _opt(
        None, "images per step over all processes; sets batch_size = global_batch / world size (must divide evenly)"
    )
    eval_batch_size: Optional[int] = _opt(None, "images per evaluation batch (default: batch_size)")
    lr: float = _opt(1e-3, "peak AdamW learning rate")
    weight_decay: float = _opt(0.05, "AdamW weight decay, not applied to the parameters wd_exempt names")
    wd_exempt: str = _opt(
        "norm_bias_embed",
        "parameters without weight decay: norm_bias_embed (1-D tensors, biases, position "
        "embedding and class token) or embed (position embedding and class token only, as mmcv's default "
        "optimizer constructor on mmsegmentation's ViT)",
        choices=("norm_bias_embed", "embed"),
    )
    warmup_steps: Optional[int] = _opt(None, "linear warmup steps (default: 5% of steps)")
    warmup_start_ratio: Optional[float] = _opt(
        None,
        "lr / peak lr at step 0 of the warmup, rising linearly to 1 (default: 1 / warmup_steps, i.e. (step + 1) / warmup_steps)",
    )
    warmup_style: str = _opt(
        "prefix",
        "prefix: the decay runs over the steps after the warmup; mmcv: the decay runs over all "
        "steps from step 0 and the warmup multiplies it (mmcv 1.x, the released configs)",
        choices=("prefix", "mmcv"),
    )
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.999, "AdamW beta2")
    schedule: str = _opt("cosine", "lr decay after warmup (poly: power 1)", choices=("cosine", "poly", "constant"))
    min_lr_ratio: float = _opt(0.01, "final lr / peak lr")
    layer_decay: float = _opt(1.0, "layer-wise lr decay from the model's group_matcher, e.g. 0.65 for fine-tuning (1: off)")
    freq_lr_mult: float = _opt(1.0, "lr multiplier of FreqScale parameters (names containing 'freq_scale')")
    clip_grad: Optional[float] = _opt(1.0, "gradient-norm clip (None / 0 on the command line: off)")
    amp: Optional[bool] = _opt(
        None, "bf16 autocast (default: on for CUDA with bf16 support, off on CPU; the recipes train in fp32 as released)"
    )
    seed: int = _opt(0, "seed of the initialization and the data order")
    img_size: Optional[int] = _opt(None, "square image size (default: the dataset's, 64 for built-ins)")
    num_classes: Optional[int] = _opt(None, "class count; checked against the data (pairs: default max label + 1)")
    drop_path: float = _opt(0.0, "stochastic depth rate")
    drop_path_schedule: str = _opt(
        "linear",
        "drop_path over the blocks: linear (0 at the first block to drop_path at the last) "
        "or uniform (drop_path in every block; ViT backbones)",
        choices=("linear", "uniform"),
    )
    head_channels: int = _opt(64, "UPerNet head width for segmentation")
    head_norm: str = _opt(
        "group", "normalization in the segmentation heads (batch: SyncBatchNorm under DDP)", choices=("group", "batch")
    )
    head_init: str = _opt(
        "torch",
        "segmentation head initialization: torch (PyTorch's default; learns fast in short runs) or mmseg "
        "(convs He-normal on fan-out, classifier std 0.01, as mmsegmentation and the paper recipes)",
        choices=("torch", "mmseg"),
    )
    head_dropout: float = _opt(0.0, "dropout before the segmentation heads' classifiers")
    aux_channels: int = _opt(0, "width of an auxiliary FCN head (0: none)")
    aux_level: int = _opt(2, "feature level the auxiliary head reads (0: the finest; the ViT recipes read 3, the last)")
    aux_weight: float = _opt(0.4, "loss weight of the auxiliary head")
    neck: str = _opt(
        "pyramid",
        "ViT segmentation neck: pyramid (strides 4-32, LayerNorm per level, GroupNorm between transposed "
        "convs), simple (the released SimpleMultiLevelNeck: strides 4-32, head_norm between transposed convs, no "
        "per-level norm) or none (the four blocks' stride-p maps)",
        choices=("pyramid", "simple", "none"),
    )
    loss_mean: str = _opt(
        "valid",
        "segmentation loss average: valid (over labelled pixels) or all (the labelled pixels' sum over "
        "every pixel, ignored ones included, as mmsegmentation 0.x)",
        choices=("valid", "all"),
    )
    crop_size: Optional[int] = _opt(
        None,
        "ade20k / pairs data: train on random crop_size crops of the paper pipeline (rescale, "
        "cat_max_ratio crop, flip, photometric distortion) and evaluate at the original size "
        "(default: every image resized to img_size square)",
    )
    img_scale: Optional[str] = _opt(
        None,
        "LONG,SHORT size images are rescaled to fit (aspect kept) in training (x 0.5-2) and "
        "evaluation (default with crop_size: 4 crop_size, crop_size, e.g. 2048,512)",
    )
    eval_mode: Optional[str] = _opt(
        None,
        "segmentation evaluation at the original size: whole (resize to img_scale, then to a "
        "multiple of 32) or slide (crop_size windows, stride 2/3 crop) (default: whole with "
        "crop_size, else batches at img_size)",
        choices=("whole", "slide"),
    )
    eval_flip: bool = _opt(False, "also evaluate the mirrored image and average the logits (with eval_mode)")
    eval_scales: Optional[str] = _opt(
        None,
        "comma-separated scale factors of img_scale to average, e.g. 0.5,0.75,1.0,1.25,1.5,1.75 (with eval_mode; default 1.0)",
    )
    init: Optional[str] = _opt(
        None,
        "start the backbone from this weights file (timm DeiT / DeiT-III .pth weights-only or "
        ".safetensors; missing and unexpected keys are reported), or 'scratch': random weights on purpose "
        "(a recipe refuses to start without init)",
    )
    eval_every: int = _opt(0, "evaluate every N steps (0: at the end only)")
    ckpt_every: int = _opt(0, "checkpoint every N steps (0: at the end only)")
    log_every: int = _opt(10, "JSON log line every N steps")
    monitor_every: int = _opt(
        25,
        "record each layer's spectral metrics (hf_ratio, token cosine similarity, effective rank) on fixed "
        "validation images (16, at most batch_size) every N steps and at the end into out/monitor.jsonl (0: off)",
    )
    tensorboard: Optional[str] = _opt(
        None, "write TensorBoard events to this folder: training loss, lr, evaluation metrics and the monitor's per-layer scalars"
    )
    num_workers: int = _opt(0, "DataLoader worker processes", flag="--workers")
    device: str = _opt("auto", "cpu, cuda, cuda:1 ... (auto: cuda if available)")
    resume: bool = _opt(False, "continue from out/checkpoint if it exists (same settings)")
    overwrite: bool = _opt(
        False,
        "start again in an out folder that holds a run (its log, checkpoint and model are replaced); "
        "without it such a folder is refused unless resume is set",
    )
    nonfinite: str = _opt(
        "stop",
        "a step whose loss or gradient is NaN or inf: stop with an error naming the step, or skip it "
        "(no update, like a mixed-precision grad scaler) and go on",
        choices=("stop", "skip"),
    )
    stop_at: Optional[int] = _opt(None, "stop after this step with a checkpoint; finish later with resume")
    progress: bool = _opt(True, "progress bar")
    global_batch_size: int = _opt(0, "filled in by the loop: batch_size x world size", cli=False)

    def validate(self) -> "TrainConfig":
        """Raise a FreqkitError naming the first impossible setting (and the device if unusable); return self."""
        from freqkit.data.spec import MAX_IMG_SIZE, MIN_IMG_SIZE

        checks = [
            (
                "model",
                isinstance(self.model, str) and self.model.strip() != "",
                f"must be a model spec such as 'vit_mini', got {self.model!r}",
            ),
            ("out", isinstance(self.out, str) and self.out.strip() != "", f"must be a folder path, got {self.out!r}"),
            ("steps", self.steps >= 1, f"must be >= 1, got {self.steps}"),
            ("batch_size", self.batch_size >= 1, f"must be >= 1, got {self.batch_size}"),
            (
                "eval_batch_size",
                self.eval_batch_size is None or self.eval_batch_size >= 1,
                f"must be >= 1 (or None), got {self.eval_batch_size}",
            ),
            ("lr", self.lr > 0 and math.isfinite(self.lr), f"must be a positive number, got {self.lr}"),
            ("weight_decay", self.weight_decay >= 0, f"must be >= 0, got {self.weight_decay}"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, f"must be in [0, 1], got {self.min_lr_ratio}"),
            ("layer_decay", 0 < self.layer_decay <= 1, f"must be in (0, 1], got {self.layer_decay}"),
            ("freq_lr_mult", self.freq_lr_mult >= 0, f"must be >= 0, got {self.freq_lr_mult}"),
            ("clip_grad", self.clip_grad is None or self.clip_grad > 0, f"must be positive (or None), got {self.clip_grad}"),
            ("drop_path", 0 <= self.drop_path < 1, f"must be in [0, 1), got {self.drop_path}"),
            ("head_channels", self.head_channels >= 1, f"must be >= 1, got {self.head_channels}"),
            (
                "schedule",
                self.schedule in ("cosine", "poly", "constant"),
                f"{self.schedule!r} is unknown; use cosine, poly or constant",
            ),
            (
                "stop_at",
                self.stop_at is None or 1 <= self.stop_at <= self.steps,
                f"must be in 1..{self.steps}, got {self.stop_at}",
            ),
            (
                "warmup_steps",
                self.warmup_steps is None or 0 <= self.warmup_steps <= self.steps,
                f"must be in 0..{self.steps}, got {self.warmup_steps}",
            ),
            (
                "task",
                self.task in (None, "classification", "segmentation"),
                f"{self.task!r} is unknown; use classification or segmentation",
            ),
            (
                "img_size",
                self.img_size is None or MIN_IMG_SIZE <= self.img_size <= MAX_IMG_SIZE,
                f"must be in {MIN_IMG_SIZE}..{MAX_IMG_SIZE}, got {self.img_size}",
            ),
            ("num_classes", self.num_classes is None or self.num_classes >= 1, f"must be >= 1, got {self.num_classes}"),
            ("eval_every", self.eval_every >= 0, f"must be >= 0 (0: at the end only), got {self.eval_every}"),
            ("ckpt_every", self.ckpt_every >= 0, f"must be >= 0 (0: at the end only), got {self.ckpt_every}"),
            ("log_every", self.log_every >= 1, f"must be >= 1, got {self.log_every}"),
            ("monitor_every", self.monitor_every >= 0, f"must be >= 0 (0: off), got {self.monitor_every}"),
            (
                "tensorboard",
                self.tensorboard is None or (isinstance(self.tensorboard, str) and self.tensorboard.strip() != ""),
                f"must be a folder path (or None), got {self.tensorboard!r}",
            ),
            ("num_workers", self.num_workers >= 0, f"must be >= 0, got {self.num_workers}"),
            (
                "global_batch",
                self.global_batch is None or self.global_batch >= 1,
                f"must be >= 1 (or None), got {self.global_batch}",
            ),
            (
                "warmup_start_ratio",
                self.warmup_start_ratio is None or 0 <= self.warmup_start_ratio <= 1,
                f"must be in [0, 1], got {self.warmup_start_ratio}",
            ),
            ("beta1", 0 <= self.beta1 < 1, f"must be in [0, 1), got {self.beta1}"),
            ("beta2", 0 <= self.beta2 < 1, f"must be in [0, 1), got {self.beta2}"),
            ("head_norm", self.head_norm in ("group", "batch"), f"{self.head_norm!r} is unknown; use group or batch"),
            ("head_init", self.head_init in ("torch", "mmseg"), f"{self.head_init!r} is unknown; use torch or mmseg"),
            ("head_dropout", 0 <= self.head_dropout < 1, f"must be in [0, 1), got {self.head_dropout}"),
            ("aux_channels", self.aux_channels >= 0, f"must be >= 0 (0: no auxiliary head), got {self.aux_channels}"),
            ("aux_weight", self.aux_weight >= 0, f"must be >= 0, got {self.aux_weight}"),
            (
                "crop_size",
                self.crop_size is None or MIN_IMG_SIZE <= self.crop_size <= MAX_IMG_SIZE,
                f"must be in {MIN_IMG_SIZE}..{MAX_IMG_SIZE}, got {self.crop_size}",
            ),
            ("eval_mode", self.eval_mode in (None, "whole", "slide"), f"{self.eval_mode!r} is unknown; use whole or slide"),
            ("nonfinite", self.nonfinite in ("stop", "skip"), f"{self.nonfinite!r} is unknown; use stop or skip"),
            (
                "img_scale",
                self.img_scale is None or _scale_ok(self.img_scale),
                f"must be LONG,SHORT (two positive integers), got {self.img_scale!r}",
            ),
            ("aux_level", self.aux_level >= 0, f"must be >= 0 (0: the finest level), got {self.aux_level}"),
            ("neck", self.neck in ("pyramid", "simple", "none"), f"{self.neck!r} is unknown; use pyramid, simple or none"),
            (
                "drop_path_schedule",
                self.drop_path_schedule in ("linear", "uniform"),
                f"{self.drop_path_schedule!r} is unknown; use linear or uniform",
            ),
            (
                "wd_exempt",
                self.wd_exempt in ("norm_bias_embed", "embed"),
                f"{self.wd_exempt!r} is unknown; use norm_bias_embed or embed",
            ),
            ("loss_mean", self.loss_mean in ("valid", "all"), f"{self.loss_mean!r} is unknown; use valid or all"),
            ("warmup_style", self.warmup_style in ("prefix", "mmcv"), f"{self.warmup_style!r} is unknown; use prefix or mmcv"),
            (
                "init",
                self.init is None or (isinstance(self.init, str) and self.init.strip() != ""),
                f"must be a weights file or 'scratch', got {self.init!r}",
            ),
        ]
        for param, ok, detail in checks:
            if not ok:
                raise ParameterError(param, detail)
        from freqkit.train.distributed import resolve_device

        resolve_device(self.device)
        if self.eval_scales is not None:
            try:
                scales = parse_scales(self.eval_scales)
            except FreqkitError as err:
                raise ParameterError("eval_scales", f"is not usable: {err}") from None
            _check_eval_scales(self, scales)
        if self.recipe is not None:
            from freqkit.train.recipes import RECIPES

            if self.recipe not in RECIPES:
                raise ParameterError("recipe", f"{self.recipe!r} is unknown; use one of {', '.join(RECIPES)}")
        return self

    @property
    def scale(self) -> Optional[tuple[int, int]]:
        """(long, short) rescale bounds: img_scale, else (4 crop_size, crop_size) with crop_size, else None."""
        if self.img_scale is not None:
            a, b = (int(v) for v in self.img_scale.split(","))
            return (a, b)
        return (4 * self.crop_size, self.crop_size) if self.crop_size else None

    @property
    def warmup(self) -> int:
        """Warmup steps (5 % of the run when not set)."""
        return int(self.warmup_steps) if self.warmup_steps is not None else max(1, round(0.05 * self.steps))

    def per_process(self, world_size: int) -> "TrainConfig":
        """A copy with ``batch_size`` per process (``global_batch`` / world size when set) and ``global_batch_size`` filled in."""
        from dataclasses import replace

        batch = self.batch_size
        if self.global_batch is not None:
            if self.global_batch % world_size:
                raise ParameterError(
                    "global_batch",
                    f"{self.global_batch} does not divide over {world_size} processes; "
                    "pick a multiple of the world size, or set batch_size per process instead",
                )
            batch = self.global_batch // world_size
        return replace(self, batch_size=batch, global_batch_size=batch * world_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve_config(recipe: str | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig defaults < recipe values (:mod:`freqkit.train.recipes`) < ``overrides`` (any field), validated."""
    from freqkit.train.recipes import recipe_values

    known = {f.name for f in fields(TrainConfig)}
    for key in overrides:
        if key not in known:
            raise ParameterError(key, f"is not a TrainConfig field; use one of {', '.join(sorted(known))}")
    values = recipe_values(recipe) if recipe is not None else {}
    return TrainConfig(**{**values, **overrides}).validate()
