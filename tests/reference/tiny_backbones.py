"The tiny open_clip CLIP the reference tests compare on (beside the mini lab's)."
import open_clip
from clip_strategies.models import with_tokenizer

def tiny_clip(vision_layers:int=2):
    "A tiny open_clip CLIP, random weights, with the real CLIP BPE tokenizer (so words and '.' split as in OpenAI's CLIP)."
    m = open_clip.CLIP(embed_dim=32, vision_cfg=dict(layers=vision_layers, width=64, patch_size=8, image_size=32, head_width=32),
                       text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
    return with_tokenizer(m.eval(), open_clip.get_tokenizer('ViT-B-32'))
