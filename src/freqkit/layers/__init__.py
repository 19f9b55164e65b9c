"""nn.Modules of freqkit: the shared Attention, its filters, FreqScale, SPAM mixers and the ViT block."""
from freqkit.layers.attention import Attention, AttentionContext, AttentionFilter
from freqkit.layers.block import FreqBlock, set_grid

# per-method layers are added below as they land (one file each)
