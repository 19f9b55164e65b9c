"""``TrainConfig``: every setting of a training run (saved with each checkpoint)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from freqkit.errors import FreqkitError

__all__ = ["TrainConfig", "RESUME_SENSITIVE"]

# fields that must match between a checkpoint and the run that resumes it (anything that changes the math)
RESUME_SENSITIVE = (
    "model", "data", "task", "steps", "global_batch_size", "lr", "weight_decay", "warmup_steps", "schedule",
    "min_lr_ratio", "layer_decay", "freq_lr_mult", "clip_grad", "amp", "seed", "img_size", "num_classes",
    "drop_path", "head_channels",
)


@dataclass
class TrainConfig:
    """Settings of one training run; defaults are the CPU-sized ``freqkit compare`` recipe."""

    model: str = "vit_mini"
    data: str = "shapes"
    task: Optional[str] = None  # inferred from the data when None
    out: str = "freqkit-run"
    steps: int = 300
    batch_size: int = 16  # per process; the global batch is batch_size x world size
    eval_batch_size: Optional[int] = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: Optional[int] = None  # None: 5 % of steps
    schedule: str = "cosine"  # cosine | poly | constant
    min_lr_ratio: float = 0.01
    layer_decay: float = 1.0
    freq_lr_mult: float = 1.0
    clip_grad: Optional[float] = 1.0
    amp: Optional[bool] = None  # None: bf16 autocast on CUDA with bf16 support, off on CPU
    seed: int = 0
    img_size: Optional[int] = None
    num_classes: Optional[int] = None
    drop_path: float = 0.0
    head_channels: int = 64
    eval_every: int = 0  # 0: evaluate at the end only
    ckpt_every: int = 0  # 0: checkpoint at the end (and at stop_at) only
    log_every: int = 10
    num_workers: int = 0
    device: str = "auto"
    resume: bool = False
    stop_at: Optional[int] = None  # stop (with a checkpoint) after this many steps; resume later
    progress: bool = True
    global_batch_size: int = 0  # filled in by the loop: batch_size x world size

    def validate(self) -> "TrainConfig":
        """Raise a FreqkitError naming the first impossible setting (and the device if unusable); return self."""
        import math

        from freqkit.data.spec import MAX_IMG_SIZE, MIN_IMG_SIZE

        checks = [
            (isinstance(self.model, str) and self.model.strip() != "", f"model must be a model spec such as 'vit_mini', got {self.model!r}"),
            (isinstance(self.out, str) and self.out.strip() != "", f"out must be a folder path, got {self.out!r}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size is None or self.eval_batch_size >= 1, f"eval_batch_size must be >= 1 (or None), got {self.eval_batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (0 < self.layer_decay <= 1, f"layer_decay must be in (0, 1], got {self.layer_decay}"),
            (self.freq_lr_mult >= 0, f"freq_lr_mult must be >= 0, got {self.freq_lr_mult}"),
            (self.clip_grad is None or self.clip_grad > 0, f"clip_grad must be positive (or None), got {self.clip_grad}"),
            (0 <= self.drop_path < 1, f"drop_path must be in [0, 1), got {self.drop_path}"),
            (self.head_channels >= 1, f"head_channels must be >= 1, got {self.head_channels}"),
            (self.schedule in ("cosine", "poly", "constant"), f"unknown schedule {self.schedule!r}; use cosine, poly or constant"),
            (self.stop_at is None or 1 <= self.stop_at <= self.steps, f"stop_at must be in 1..{self.steps}, got {self.stop_at}"),
            (self.warmup_steps is None or 0 <= self.warmup_steps <= self.steps, f"warmup_steps must be in 0..{self.steps}, got {self.warmup_steps}"),
            (self.task in (None, "classification", "segmentation"), f"unknown task {self.task!r}; use classification or segmentation"),
            (self.img_size is None or MIN_IMG_SIZE <= self.img_size <= MAX_IMG_SIZE,
             f"img_size must be in {MIN_IMG_SIZE}..{MAX_IMG_SIZE}, got {self.img_size}"),
            (self.num_classes is None or self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}"),
            (self.eval_every >= 0, f"eval_every must be >= 0 (0: at the end only), got {self.eval_every}"),
            (self.ckpt_every >= 0, f"ckpt_every must be >= 0 (0: at the end only), got {self.ckpt_every}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise FreqkitError(msg)
        from freqkit.train.distributed import resolve_device

        resolve_device(self.device)
        return self

    @property
    def warmup(self) -> int:
        """Warmup steps (5 % of the run when not set)."""
        return int(self.warmup_steps) if self.warmup_steps is not None else max(1, round(0.05 * self.steps))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
