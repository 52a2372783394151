"""Regenerates examples/*.jpg: public-domain / CC0 photos from scikit-image, hazed with the
scattering model and dcmp's stand-in depth (a vertical gradient).

    pip install scikit-image && python tools/make_examples.py

Sources (scikit-image's bundled data, see skimage/data/_fetchers.py docstrings):
  rocket.jpg  - SpaceX launch photo, released into the public domain by SpaceX
  coffee.png  - Rachel Michetti, CC0
  chelsea.png - Stefan van der Walt, CC0
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dcmp_cli.data.haze import add_haze, vertical_gradient_depth
from dcmp_cli.data.image_io import write_image

# name -> (skimage file, beta, airlight, output width)
EXAMPLES = {
    "rocket_hazy.jpg": ("rocket.jpg", 1.6, (0.80, 0.82, 0.85), 480),
    "coffee_hazy.jpg": ("coffee.png", 1.3, (0.90, 0.90, 0.88), 480),
    "chelsea_hazy.jpg": ("chelsea.png", 1.1, (0.85, 0.86, 0.88), 400),
}


def main() -> None:
    import skimage

    data_dir = Path(skimage.__file__).parent / "data"
    out_dir = Path(__file__).resolve().parents[1] / "examples"
    out_dir.mkdir(exist_ok=True)
    for name, (source, beta, airlight, width) in EXAMPLES.items():
        image = Image.open(data_dir / source).convert("RGB")
        height = round(image.height * width / image.width)
        clear = np.asarray(image.resize((width, height), Image.LANCZOS), dtype=np.float32) / 255.0
        depth = vertical_gradient_depth(height, width, near=0.25, far=1.0)
        write_image(out_dir / name, add_haze(clear, depth, beta, np.array(airlight)), quality=92)
        print(f"wrote examples/{name} ({width}x{height}) from {source}, beta={beta}, A={airlight}")


if __name__ == "__main__":
    main()
