"""The VLM reranker checks its device (inquire.rerank.vlm)."""

from __future__ import annotations

import pytest


def test_vlm_reranker_checks_device_before_loading() -> None:
    """A device that does not exist fails clearly (not as a torch error after loading)."""
    import torch

    from inquire.errors import InputError
    from inquire.rerank.vlm import FAMILIES, VLMReranker

    missing_gpu = f"cuda:{torch.cuda.device_count()}"
    for device in ("gpu0", missing_gpu):
        with pytest.raises(InputError, match="device"):
            VLMReranker(FAMILIES["llava-1.5"], "no/such-model", device=device)
