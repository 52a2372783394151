"""dcmp: single-image dehazing with DCMPNet (Zhang, Zhou, Li, CVPR 2024)."""

__version__ = "0.1.0"
