"""timm-registered backbones, ``convert`` and checkpoint loading. Importing this registers the models."""

# model families register themselves with timm on import (one file per family)
from freqkit.models import (
    antismooth_vit,  # noqa: F401  (registers deit_small_{attnscale,featscale,gfsa}_patch16_224)
    fdam_vit,  # noqa: F401  (registers deit_*_fdam_patch16_224, fdam_vit_*_dense)
    spanet,  # noqa: F401  (registers spanet_{small,medium,mediumx,base,basex})
    spanetv2,  # noqa: F401  (registers spanetv2_{s18,s36,m36,b36}_{pure,hybrid})
)
from freqkit.models.checkpoint import load_checkpoint, load_state_dict_file
from freqkit.models.convert import METHODS, convert
from freqkit.models.factory import create  # noqa: E402  (build an analysis model by name: pretrained, offline, checkpoint)
from freqkit.models.fdam_vit import load_fdam_checkpoint, remap_released_keys
from freqkit.models.segmentation import create_segmentation_model  # noqa: E402  (UPerNet segmenters on any backbone; not timm-registered)
