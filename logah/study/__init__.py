"""Studies: Ray Tune + Optuna sweeps of the trial function (train GHN → predict → fine-tune).

A study script declares a ``Study`` and hands it to ``main``:

    STUDY = Study(name="rank_sweep", question="...",
                  space={"smoke": {"ghn_training.ghn.rank": Choice(2, 8)}, ...})
    if __name__ == "__main__":
        sys.exit(main(STUDY))

Modules: ``space`` (parameters over dotted trial settings), ``scales`` (the trial each preset
starts from), ``spec`` (declaration and checked plan), ``runner`` (Ray Tune), ``tables`` (the
trial and step tables), ``summary`` (what is printed), ``cli`` (the shared options).
"""

from logah.study.cli import main
from logah.study.space import Choice, FloatRange, IntRange, Variants, panel
from logah.study.spec import Study

__all__ = ["Choice", "FloatRange", "IntRange", "Study", "Variants", "main", "panel"]
