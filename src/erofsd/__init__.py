"""erofsd: lazy-loading EROFS container images with shared cache domains."""

__version__ = "0.1.0"
