"""The stages of `afrocomet run`, one module per job:

budgets (default stages and configs) -> inputs (datasets, tokenizer, encoded splits) -> dev (dev scores)
-> context (one stage run, resumable) -> teacher (teacher preparation, vocabulary trimming) -> students
(the variants trained) -> systems (evaluation) -> efficiency -> outputs (output folder checks) -> steps
(`run`, top to bottom).
"""

from afrocomet.run.budgets import default_config, default_stages
from afrocomet.run.steps import run
from afrocomet.run.students import run_variants
from afrocomet.run.teacher import has_task_head

__all__ = ["default_config", "default_stages", "has_task_head", "run", "run_variants"]
