"""Image and video I/O, dataset layouts, haze synthesis and augmentation."""
