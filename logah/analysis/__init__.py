"""Study analysis without Ray: tidy trial tables, the questions asked of them, and the report.

    from logah.analysis import load_study, aggregate_seeds, write_report

``tables`` loads study folders (``study.json``, ``trials.parquet``, ``steps.parquet``, the
Optuna study), ``stats`` aggregates over seeds and finds best trials and Pareto fronts,
``figures`` draws the report's plotly panels, ``labels`` names columns for readers,
``report`` writes the self-contained HTML dashboard behind ``logah report``, and ``notebooks``
finds the study a notebook in ``analysis/`` reads and gives its figures static images.
"""

from logah.analysis.report import write_report
from logah.analysis.stats import (PANEL_MEAN, aggregate_seeds, at_best_setting,
                                  at_best_setting_per_target, best_per_group, pareto_front)
from logah.analysis.tables import (Study, combined_steps, combined_trials, export_tables,
                                   load_optuna_study, load_studies, load_study, tidy_trials)

__all__ = ["PANEL_MEAN", "Study", "aggregate_seeds", "at_best_setting", "at_best_setting_per_target",
           "best_per_group", "combined_steps", "combined_trials", "export_tables",
           "load_optuna_study", "load_studies", "load_study", "pareto_front", "tidy_trials",
           "write_report"]

