"""timm-registered backbones, ``convert`` and checkpoint loading. Importing this registers the models."""
from freqkit.models.checkpoint import load_checkpoint, load_state_dict_file
from freqkit.models.convert import METHODS, convert

# model families register themselves with timm on import (one file per family)
from freqkit.models import antismooth_vit  # noqa: F401  (registers deit_small_{attnscale,featscale,gfsa}_patch16_224)
from freqkit.models import fdam_vit  # noqa: F401  (registers deit_*_fdam_patch16_224, fdam_vit_*_dense)
from freqkit.models.fdam_vit import load_fdam_checkpoint, remap_released_keys
from freqkit.models import spanet  # noqa: F401  (registers spanet_{small,medium,mediumx,base,basex})
from freqkit.models import spanetv2  # noqa: F401  (registers spanetv2_{s18,s36,m36,b36}_{pure,hybrid})
from freqkit.models.segmentation import create_segmentation_model  # noqa: E402  (UPerNet segmenters on any backbone; not timm-registered)
from freqkit.models.factory import create  # noqa: E402  (build an analysis model by name: pretrained, offline, checkpoint)
