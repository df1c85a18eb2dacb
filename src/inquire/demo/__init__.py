"""The offline demo (``inquire demo``, ``make demo``): a synthetic benchmark run through the
same library code as a real evaluation, one module per step.

- :mod:`.main`: :func:`run_demo`, the whole demo in order, then where the outputs went and
  commands to try on them;
- :mod:`.embed`: the embedding pipeline with a tiny random-weight open_clip model;
- :mod:`.rerank`: INQUIRE-Rerank and two-stage reranking with a tiny random-weight VLM;
- :mod:`.report`: an HTML report and paired tests of two runs;
- :mod:`.feedback`: a simulated verifier measuring relevance feedback;
- :mod:`.collection`: a photo collection searched with ``toy:colour``;
- :mod:`.web`: the ``inquire serve`` command over the demo's outputs.

Demo steps build their stand-in models and files with :mod:`inquire.testing`; production
code never imports this package.
"""

from __future__ import annotations

from inquire.demo.main import run_demo

__all__ = ["run_demo"]
