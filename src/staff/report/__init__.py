"""Report: a finished run folder -> report.html, one page a person reads (figures embedded).

Reads the run's files only; never imports torch or transformers, never loads a model.
"""

from staff.report.figures import plot_benchmark
from staff.report.html import build_report, build_reports
from staff.report.read import ReportError

__all__ = ["ReportError", "build_report", "build_reports", "plot_benchmark"]
