"""Size of a model: parameters and bytes on disk (module, saved folder or weight file), bytes in memory."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from afrocomet.errors import AfroCometError

_FORMATS = (("safetensors", (".safetensors",)), ("pytorch", (".bin", ".pt", ".pth")), ("onnx", (".onnx",)))


def _count_file(path: Path, fmt: str) -> tuple[int, int]:
    """(tensor elements, bytes on disk) of one weight file, external ONNX data included."""
    if fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()), path.stat().st_size
    if fmt == "pytorch":
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        return sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor)), path.stat().st_size
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    parameters = sum(int(np.prod(t.dims)) for t in graph.initializer)
    external = {e.value for t in graph.initializer for e in t.external_data if e.key == "location"}
    return parameters, path.stat().st_size + sum((path.parent / name).stat().st_size for name in external)


def _size_of_path(path: Path) -> dict[str, int]:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for fmt, suffixes in _FORMATS:  # the first format present is the one counted
        chosen = [p for p in files if p.name.endswith(suffixes)]
        if chosen:
            counts = [_count_file(p, fmt) for p in chosen]
            return {"parameters": sum(c[0] for c in counts), "disk_bytes": sum(c[1] for c in counts)}
    raise AfroCometError("no weight file (*.safetensors, *.bin, *.pt, *.onnx) found", path=path)


def model_size(model: torch.nn.Module | str | Path) -> dict[str, int]:
    """Parameters and bytes on disk of a model, a saved model folder or a weight file.

    A module is saved with safetensors to a temporary file (shared tensors once) and measured.
    A folder counts the files of one format only (safetensors, else PyTorch, else ONNX).
    """
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise AfroCometError("model path does not exist", path=path)
        return _size_of_path(path)
    from safetensors.torch import save_model

    parameters = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "model.safetensors"
        try:
            save_model(model, str(file))
        except (ValueError, TypeError, RuntimeError):  # e.g. packed int8 weights: not plain tensors
            file = Path(tmp) / "model.pt"
            torch.save(model.state_dict(), file)
        return {"parameters": parameters, "disk_bytes": file.stat().st_size}


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the model's parameters and buffers in memory (shared tensors once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """Parameters outside the embedding tables (word, position, token type: every nn.Embedding),
    counted once where shared: what a model's depth and width cost, whatever its vocabulary (a
    tied masked-LM decoder is the word embedding, so it is not counted either)."""
    embedded = {p.data_ptr() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    seen, total = set(embedded), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total
