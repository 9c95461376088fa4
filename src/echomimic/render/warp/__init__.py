"""The default CPU renderer: warps the person's own photo."""

from .renderer import WarpRenderer

__all__ = ["WarpRenderer"]
