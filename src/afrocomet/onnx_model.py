"""Run an exported ONNX classifier with ONNX Runtime, behind the same call as a PyTorch model.

An ONNX folder (written by `afrocomet.export`) holds `model.onnx` (fp32), optionally
`model.int8.onnx` (dynamic int8), `config.json` (with id2label), the tokenizer files and
`parity.json`. The graph takes `input_ids` and `attention_mask` (int64 [batch, seq], both axes
dynamic) and returns `logits` (float32 [batch, num_labels]).

`OnnxClassifier` wraps an InferenceSession as a `torch.nn.Module` whose forward returns an object
with `.logits`, so every helper written for PyTorch classifiers (`inference.predict_logits`,
`bench.torch_predictor`, ...) runs it unchanged: same tokenization, batching and truncation.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from afrocomet.errors import AfroCometError
from afrocomet.models.build import first_line

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
INSTALL_HINT = "install the ONNX extras: pip install 'afrocomet[export]'"


def import_onnxruntime() -> Any:
    """The onnxruntime module, or an error that says how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise AfroCometError(f"ONNX Runtime is not installed ({first_line(exc)}); {INSTALL_HINT}") from exc
    return onnxruntime


def _providers(ort: Any, device: str) -> list[str]:
    """CPU for cpu/auto (auto takes CUDA when this onnxruntime build has it), CUDA for cuda[:n]."""
    available = ort.get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise AfroCometError(f"this onnxruntime build has no CUDA provider (has {', '.join(available)}); "
                                 "install onnxruntime-gpu or use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto" and "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device not in ("auto", "cpu"):
        raise AfroCometError(f"ONNX models run on cpu or cuda, not {device!r}")
    return ["CPUExecutionProvider"]


def open_session(path: str | Path, *, threads: int | None = None, device: str = "cpu") -> Any:
    """An ONNX Runtime session for the classifier graph at `path`; checks its inputs and output.

    `threads` sets ONNX Runtime's intra-op threads (None: the free cores, afrocomet.device.choose_threads;
    ONNX Runtime's own default, one per physical core, oversubscribes a busy machine).
    """
    from afrocomet.device import choose_threads

    ort = import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise AfroCometError("ONNX file not found" if not path.exists() else "not a file", path=path)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about unused initializers on stderr
    options.intra_op_num_threads = choose_threads(threads)
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=_providers(ort, device))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise AfroCometError(f"cannot load the ONNX model: {first_line(exc)}", path=path) from exc
    inputs = sorted(i.name for i in session.get_inputs())
    outputs = [o.name for o in session.get_outputs()]
    if inputs != sorted(INPUT_NAMES) or OUTPUT_NAME not in outputs:
        raise AfroCometError(f"the ONNX graph takes {inputs} and gives {outputs}; expected inputs "
                             f"{list(INPUT_NAMES)} and output {OUTPUT_NAME!r} (export it with afrocomet export)",
                             path=path)
    return session


class OnnxClassifier(torch.nn.Module):
    """An ONNX Runtime session that looks like a Hugging Face sequence classifier to callers.

    `forward(input_ids, attention_mask)` takes torch tensors (any device; copied to the host)
    and returns `SimpleNamespace(logits=FloatTensor[batch, num_labels])` on the CPU.
    """

    def __init__(self, session: Any, config: Any, path: str | Path):
        super().__init__()
        self.session = session
        self.config = config  # the folder's PretrainedConfig: num_labels, id2label, positions
        self.path = Path(path)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> SimpleNamespace:
        feeds = {"input_ids": input_ids.detach().cpu().numpy().astype(np.int64),  # [B, S]
                 "attention_mask": attention_mask.detach().cpu().numpy().astype(np.int64)}  # [B, S]
        (logits,) = self.session.run([OUTPUT_NAME], feeds)  # [B, num_labels]
        return SimpleNamespace(logits=torch.from_numpy(np.asarray(logits, dtype=np.float32)))


def load_onnx_classifier(folder: str | Path, onnx_file: str = ONNX_FILE, *, threads: int | None = None,
                         device: str = "cpu") -> OnnxClassifier:
    """`OnnxClassifier` for `folder/onnx_file`, with the folder's config.json."""
    from transformers import AutoConfig

    folder = Path(folder)
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise AfroCometError(f"cannot read config.json: {first_line(exc)}", path=folder) from exc
    path = folder / onnx_file
    return OnnxClassifier(open_session(path, threads=threads, device=device), config, path)
