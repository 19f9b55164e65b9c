"""timm-registered backbones, ``convert`` and checkpoint loading. Importing this registers the models."""
from freqkit.models.checkpoint import load_checkpoint, load_state_dict_file
from freqkit.models.convert import METHODS, convert

# model families register themselves with timm on import (one file per family)
