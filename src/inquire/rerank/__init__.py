"""Reranking: CLIP, vision-language models and API models behind one interface.

``load_reranker("vlm:llava-1.5/llava-hf/llava-1.5-7b-hf").score(query, images)`` returns one
float per image, higher = more relevant. See :mod:`inquire.rerank.registry` for the ids.
"""

from __future__ import annotations

from inquire.rerank.base import Reranker, load_image
from inquire.rerank.registry import KINDS, RerankOptions, load_reranker, parse_reranker_id

__all__ = ["KINDS", "RerankOptions", "Reranker", "load_image", "load_reranker", "parse_reranker_id"]
