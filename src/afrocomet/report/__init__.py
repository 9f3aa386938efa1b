"""The run report (`report.md` + `plots/*.png`) and the model card of the distilled student.

Everything is read from the results dict of `afrocomet run` (the content of `results.json`) and
the per-stage JSONL logs it points to. Any part may be missing (no ablations, one custom
"language", no benchmark, no logs): what is missing is left out, never guessed.

- `read`: the results dict and the stage logs; `fmt`: numbers as printed; `cite`: licence and BibTeX.
- `sections`: the markdown of report.md; `efficiency`: its efficiency table (the schema of
  `afrocomet.bench.efficiency`); `plots`: the PNG plots; `card`: the Hugging Face model card.
"""

from __future__ import annotations

from pathlib import Path

from afrocomet.io import atomic_write_text
from afrocomet.report.card import model_card
from afrocomet.report.plots import write_plots
from afrocomet.report.read import read_log
from afrocomet.report.sections import render_report

__all__ = ["model_card", "read_log", "render_report", "write_plots", "write_report"]


def write_report(results: dict, out_dir: Path) -> Path:
    """Write out_dir/report.md and out_dir/plots/*.png from a run's results; returns report.md."""
    out_dir = Path(out_dir)
    plots = write_plots(results, out_dir)  # looked up here, so that tests can replace it on this package
    return atomic_write_text(out_dir / "report.md", render_report(results, plots, out_dir))
