"""detkit.compare: the survey's detection comparisons as one command (``detkit compare``).

A study (``configs/compare/<budget>.yaml``, read by ``study.py``) names the runs to train, the
data, and the recipe every run shares; ``core.compare`` trains or loads them, evaluates them
on the same splits with bootstrap noise, measures their cost, runs the suites (detectors,
focal, necks, backbones, nms) and judges the survey's claims (``claims.py``), writing
results.json, report.md (``report.py``) and the plots (``plots.py``).
"""

from detkit.compare.claims import CLAIMS, verdicts
from detkit.compare.core import compare, rebuild_report, write
from detkit.compare.study import BUDGETS, SUITES, Study, load_study

__all__ = ["BUDGETS", "CLAIMS", "SUITES", "Study", "compare", "load_study", "rebuild_report", "verdicts", "write"]
