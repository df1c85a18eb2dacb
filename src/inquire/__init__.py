"""inquire: expert-level text-to-image retrieval over natural-world image collections.

The public surface, loaded on first use (``import inquire`` itself imports nothing heavy:
no numpy, pandas, torch, transformers or faiss)::

    inquire.Run, inquire.Qrels              runs and relevance judgments (from_dict, read)
    inquire.evaluate(qrels, run, k=50)      -> EvalResult (.overall, .per_query)
    inquire.evaluate_rerank(model, ...)     INQUIRE-Rerank with your model or a registry id
    inquire.evaluate_fullrank(model, ...)   INQUIRE-Fullrank with your model or a registry id
    inquire.EvalResult, inquire.TextImageModel
    inquire.read_qrels, load_qrels, read_queries, load_queries   INQUIRE's files

Submodules (``inquire.eval``, ``inquire.stats``, ...) also load on first use; a name that
does not exist suggests close ones. See docs/api.md.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from inquire._version import __version__

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ imports on first use
    from inquire.api import evaluate as evaluate
    from inquire.api import evaluate_fullrank as evaluate_fullrank
    from inquire.api import evaluate_rerank as evaluate_rerank
    from inquire.data.qrels import Qrels as Qrels
    from inquire.data.qrels import load_qrels as load_qrels
    from inquire.data.qrels import read_qrels as read_qrels
    from inquire.data.queries import load_queries as load_queries
    from inquire.data.queries import read_queries as read_queries
    from inquire.eval.evaluate import EvalResult as EvalResult
    from inquire.model import TextImageModel as TextImageModel
    from inquire.run import Run as Run

# Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "EvalResult": "inquire.eval.evaluate",
    "Qrels": "inquire.data.qrels",
    "Run": "inquire.run",
    "TextImageModel": "inquire.model",
    "evaluate": "inquire.api",
    "evaluate_fullrank": "inquire.api",
    "evaluate_rerank": "inquire.api",
    "load_qrels": "inquire.data.qrels",
    "load_queries": "inquire.data.queries",
    "read_qrels": "inquire.data.qrels",
    "read_queries": "inquire.data.queries",
}

__all__ = ["__version__", *_EXPORTS]


def _submodules() -> list[str]:
    """The public modules and packages of inquire (``inquire.eval``, ``inquire.stats``, ...)."""
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    if name.startswith("_"):  # __wrapped__, __test__, ...: asked by tools, not people
        raise AttributeError(f"module 'inquire' has no attribute {name!r}", name=name)
    if name in _submodules():
        # `inquire.stats` works without `import inquire.stats`, as `numpy.linalg` does; the
        # import system binds the submodule here, so this runs once per submodule.
        return importlib.import_module(f"{__name__}.{name}")
    import difflib

    close = difflib.get_close_matches(name, [*_EXPORTS, *_submodules()], n=3, cutoff=0.6)
    lowered = [n for n in (*_EXPORTS, *_submodules()) if n.lower() == name.lower()]
    hints = list(dict.fromkeys([*lowered, *close]))
    hint = f"; did you mean {', '.join(f'inquire.{h}' for h in hints)}?" if hints else ""
    raise AttributeError(
        f"module 'inquire' has no attribute {name!r}{hint} (the public names: "
        f"{', '.join(sorted(_EXPORTS))}; see help(inquire))",
        name=name,
        obj=sys.modules[__name__],
    )


def __dir__() -> list[str]:
    """The public names and submodules (what tab completion offers), and the dunders."""
    dunders = [n for n in globals() if n.startswith("__") and n.endswith("__")]
    return sorted({*dunders, *_EXPORTS, *_submodules()})
