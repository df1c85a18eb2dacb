"""inquire: expert-level text-to-image retrieval over natural-world image collections.

Nothing heavy is imported here: torch, transformers and faiss load only when a model or an
index is used.
"""

from __future__ import annotations

from inquire._version import __version__

__all__ = ["__version__"]
