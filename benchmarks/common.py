"""Helpers shared by the benchmark scripts: quick random-weight models, batches, tables, JSON."""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import torch


def random_model(preset: str, task: str = "mlm", *, vocab_size: int | None = None, seed: int = 0):
    """A preset model with random weights, made quickly.

    HF's initialisation of the 560M-parameter teacher takes ~15 s on 2 cores; here each matrix is a
    random N(0, 0.02) block of up to 256 rows tiled over its rows (same shapes, memory and cost).
    """
    from transformers.initialization import no_init_weights

    from afrocomet.models.build import TASKS
    from afrocomet.models.presets import get_preset

    config = get_preset(preset).to_config(vocab_size=vocab_size)
    with no_init_weights():
        model = TASKS[task].from_config(config, attn_implementation="sdpa")
    model.tie_weights()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                block = torch.randn(min(p.shape[0], 256), *p.shape[1:], generator=g) * 0.02
                p.copy_(block.repeat(math.ceil(p.shape[0] / block.shape[0]), *[1] * (p.dim() - 1))[: p.shape[0]])
            elif name.endswith("LayerNorm.weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return model


def mlm_batch(batch_size: int, seq_len: int, vocab_size: int, *, p: float = 0.15, seed: int = 0,
              mask_id: int | None = None) -> dict[str, torch.Tensor]:
    """Random token ids (all real, <s> ... </s>), `p` of the inner positions masked for MLM."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab_size - 1, (batch_size, seq_len), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    chosen = torch.rand(batch_size, seq_len, generator=g) < p
    chosen[:, 0] = chosen[:, -1] = False
    chosen[0, 1] = True  # at least one
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    ids = ids.masked_fill(chosen, vocab_size - 1 if mask_id is None else mask_id)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mlm_labels": labels}


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table of `rows` (dicts) with the given columns."""
    cells = [columns] + [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: str | Path, data: dict) -> None:
    from afrocomet.io import atomic_write_json

    atomic_write_json(Path(path), data)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
