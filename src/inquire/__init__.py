"""inquire: expert-level text-to-image retrieval over natural-world image collections.

Nothing heavy is imported here: torch, transformers and faiss load only when a model or an
index is used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
