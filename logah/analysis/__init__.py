"""Study analysis without Ray: tidy trial tables, the questions asked of them, and the report.

    from logah.analysis import load_study, aggregate_seeds, write_report

``tables`` loads study folders (``study.json``, ``trials.parquet``, ``steps.parquet``, the
Optuna study), ``stats`` aggregates over seeds and finds best trials and Pareto fronts,
``figures`` draws the report's plotly panels, ``labels`` names columns for readers, and
``report`` writes the self-contained HTML dashboard behind ``logah report``.
"""

from logah.analysis.report import write_report
from logah.analysis.stats import aggregate_seeds, at_best_setting, best_per_group, pareto_front
from logah.analysis.tables import (Study, combined_steps, combined_trials, export_tables,
                                   load_optuna_study, load_studies, load_study)

__all__ = ["Study", "aggregate_seeds", "at_best_setting", "best_per_group", "combined_steps",
           "combined_trials", "export_tables", "load_optuna_study", "load_studies", "load_study", "pareto_front",
           "write_report"]

