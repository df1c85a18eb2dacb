"""Reports over evaluation results: tables, statistics, comparisons and plots.

``build_report(results)`` tabulates runs overall and per group with bootstrap intervals;
``compare(results)`` tests pairs of runs over the same queries; :mod:`.formats` renders both
as terminal, Markdown, CSV, LaTeX or HTML; :mod:`.plots` draws the figures;
:mod:`.leaderboard` holds the published INQUIRE numbers; ``write_report(results, fmt, out)``
does all of it and writes the files (``inquire report``).
"""

from inquire.report.build import Report, build_report
from inquire.report.compare import Comparison, compare
from inquire.report.leaderboard import load_leaderboard
from inquire.report.write import WrittenReport, write_report

__all__ = [
    "Comparison",
    "Report",
    "WrittenReport",
    "build_report",
    "compare",
    "load_leaderboard",
    "write_report",
]
