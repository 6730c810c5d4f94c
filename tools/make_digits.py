"""Write scikit-learn's bundled handwritten digits (1797 real 8x8 images, 10 classes) as an ImageFolder whose class names
the mini CLIP's pretraining never saw: ROOT/{train,test}/{zero,one,...,nine}/*.png, a stratified seeded 60/40 split.

    python tools/make_digits.py /tmp/digits              # 8x8 PNGs (the mini preprocess upsamples them, bicubic)
    python tools/make_digits.py /tmp/digits32 --size 32  # PNGs upscaled to 32x32 (nearest: 4x4 blocks per pixel)

Pixels are the dataset's ink values 0..16 scaled to 0..255 (white ink on black), grayscale saved as RGB.
"""
import argparse, shutil
from pathlib import Path

NAMES = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')

def make_digits(root, size:int=8, test_size:float=0.4, seed:int=0, overwrite:bool=False)->Path:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    root = Path(root)
    if root.exists():
        if not overwrite: raise FileExistsError(f'{root} exists (pass --overwrite)')
        shutil.rmtree(root)
    d = load_digits()
    idx = np.arange(len(d.target))
    tr, te = train_test_split(idx, test_size=test_size, stratify=d.target, random_state=seed)
    for split, ids in (('train', tr), ('test', te)):
        for i in sorted(ids):
            folder = root/split/NAMES[d.target[i]]
            folder.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray((d.images[i]*(255/16)).round().clip(0, 255).astype(np.uint8), 'L').convert('RGB')
            if size != 8: img = img.resize((size, size), Image.NEAREST)
            img.save(folder/f'{i:04d}.png')
    return root

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('root')
    ap.add_argument('--size', type=int, default=8, help='saved image side (8: as is; 32: nearest-neighbour upscale)')
    ap.add_argument('--test-size', type=float, default=0.4)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--overwrite', action='store_true')
    a = ap.parse_args()
    root = make_digits(a.root, a.size, a.test_size, a.seed, a.overwrite)
    for s in ('train', 'test'): print(s, {c.name: len(list(c.glob('*.png'))) for c in sorted((root/s).iterdir())})

if __name__ == '__main__': main()
