"""The stages of `afrocomet run`: budgets, data, teacher, students, the systems compared, the run itself."""

from afrocomet.run.pipeline import default_config, default_stages, has_task_head, run, run_variants

__all__ = ["default_config", "default_stages", "has_task_head", "run", "run_variants"]
