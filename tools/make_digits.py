"""Write scikit-learn's bundled handwritten digits (1797 real 8x8 images, 10 classes) as an ImageFolder whose class names
the mini CLIP's pretraining never saw: ROOT/{train,test}/{zero,one,...,nine}/*.png, a stratified seeded 60/40 split.
The writer is `clip_strategies.mini.make_digits` (the notebooks call it; `pip install` brings it); this is its command line.

    python tools/make_digits.py /tmp/digits              # 8x8 PNGs (the mini preprocess upsamples them, bicubic)
    python tools/make_digits.py /tmp/digits32 --size 32  # PNGs upscaled to 32x32 (nearest: 4x4 blocks per pixel)

Pixels are the dataset's ink values 0..16 scaled to 0..255 (white ink on black), grayscale saved as RGB.
"""
import argparse
from clip_strategies.mini import make_digits, DIGIT_NAMES as NAMES

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
