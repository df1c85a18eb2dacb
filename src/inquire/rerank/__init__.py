"""Reranking: CLIP, vision-language models and API models behind one interface."""
