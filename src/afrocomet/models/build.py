"""Build XLM-R models from presets (random weights, no download) or load pretrained ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)

from afrocomet.errors import AfroCometError
from afrocomet.models.presets import PRESETS, ModelPreset, get_preset

TASKS: dict[str, Any] = {
    "classification": AutoModelForSequenceClassification,  # XLMRobertaForSequenceClassification
    "mlm": AutoModelForMaskedLM,  # XLMRobertaForMaskedLM (decoder tied to the word embeddings)
    "base": AutoModel,  # XLMRobertaModel with its pooler
}
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _auto_class(task: str) -> Any:
    if task not in TASKS:
        raise AfroCometError(f"unknown model task {task!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[task]


def build_model(
    config_or_preset: PretrainedConfig | ModelPreset | str,
    task: str = "classification",
    *,
    vocab_size: int | None = None,
    num_labels: int = 3,
    attn_implementation: str = "sdpa",
    seed: int | None = None,
) -> PreTrainedModel:
    """A randomly initialised XLM-R model for `task`, from a config, a preset or a preset name.

    `vocab_size` and `num_labels` apply to presets only; a config is used as given.
    With `seed`, the weights depend only on the seed (the global torch RNG is left untouched).
    """
    auto_class = _auto_class(task)
    if isinstance(config_or_preset, str):
        config_or_preset = get_preset(config_or_preset)
    if isinstance(config_or_preset, ModelPreset):
        config = config_or_preset.to_config(vocab_size=vocab_size, num_labels=num_labels)
    else:
        config = copy.deepcopy(config_or_preset)  # from_config writes to the config it is given
    if seed is None:
        return _from_config(auto_class, config, task, attn_implementation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _from_config(auto_class, config, task, attn_implementation)


def _from_config(auto_class: Any, config: PretrainedConfig, task: str, attn_implementation: str) -> PreTrainedModel:
    try:
        return auto_class.from_config(config, attn_implementation=attn_implementation)
    except (ValueError, ImportError) as exc:
        raise AfroCometError(f"could not build a {task} model: {exc}") from exc


def mlm_head(model: torch.nn.Module) -> torch.nn.Module:
    """The masked-LM head of a `*ForMaskedLM` model, whatever the family names it (XLM-R `lm_head`,
    BERT `cls`): the one child module beside the encoder (`base_model_prefix`)."""
    heads = [module for name, module in model.named_children() if name != model.base_model_prefix]
    if len(heads) != 1:
        raise AfroCometError(f"{type(model).__name__} is not a masked-LM model afrocomet can read "
                             f"(expected the encoder and one head, found {[n for n, _ in model.named_children()]})")
    return heads[0]


def count_parameters(model: torch.nn.Module) -> int:
    """The number of parameters, each tied (shared) tensor counted once."""
    unique = {id(p): p for _, p in model.named_parameters(remove_duplicate=False)}
    return sum(p.numel() for p in unique.values())


def preset_parameters(name: str, *, vocab_size: int | None = None) -> int:
    """Parameters of the preset's `XLMRobertaModel` (with pooler), counted on a model built on `meta`."""
    config = get_preset(name).to_config(vocab_size=vocab_size)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = AutoModel.from_config(config)
    return count_parameters(model)


def presets_table() -> list[dict[str, Any]]:
    """One row per preset, parameters counted from built models."""
    return [
        {
            "name": p.name,
            "layers": p.num_layers,
            "hidden": p.hidden_size,
            "heads": p.num_heads,
            "ffn": p.intermediate_size,
            "vocab": p.vocab_size,
            "positions": p.max_position_embeddings,
            "parameters": preset_parameters(p.name),
            "description": p.description,
        }
        for p in PRESETS.values()
    ]


def check_weights(folder: str | Path) -> Path:
    """A local model folder with config.json and safetensors weights whose headers read back.

    Pickled `pytorch_model.bin` weights are refused (unpickling can run code). Reading each
    safetensors header (not the tensors) catches a truncated or corrupt file in milliseconds."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise AfroCometError("model folder not found" if not folder.exists() else "not a folder", path=folder)
    if not (folder / "config.json").is_file():
        raise AfroCometError("model folder has no config.json (save the model with save_pretrained)", path=folder)
    if not any((folder / name).is_file() for name in SAFE_WEIGHTS):
        if any((folder / name).is_file() for name in PICKLED_WEIGHTS):
            raise AfroCometError(
                "model folder has only pickled pytorch_model.bin weights, which afrocomet does not load "
                "(unpickling can run code); convert them to model.safetensors first, e.g. "
                "model.save_pretrained(folder) with transformers, or the safetensors 'convert' script",
                path=folder,
            )
        raise AfroCometError("model folder has no weights (model.safetensors)", path=folder)
    for shard in _safetensors_files(folder):
        _check_safetensors(shard)
    return folder


def _safetensors_files(folder: Path) -> list[Path]:
    if (folder / SAFE_WEIGHTS[0]).is_file():
        return [folder / SAFE_WEIGHTS[0]]
    index = folder / SAFE_WEIGHTS[1]
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AfroCometError(f"unreadable weight index: {first_line(exc)}", path=index) from exc
    return [folder / shard for shard in shards]


def _check_safetensors(path: Path) -> None:
    """Open the file's header; safetensors checks that every tensor's bytes lie inside the file."""
    from safetensors import safe_open

    if not path.is_file():
        raise AfroCometError("weight file listed in the index is missing", path=path)
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:  # SafetensorError derives from Exception only
        raise AfroCometError(f"not a readable safetensors file (truncated or corrupt? {first_line(exc)})",
                             path=path) from exc


def load_pretrained(
    name_or_path: str | Path,
    task: str = "classification",
    *,
    num_labels: int = 3,
    id2label: dict[int, str] | None = None,
    trust_remote_code: bool = False,
    output_loading_info: bool = False,
    add_pooling_layer: bool | None = None,
) -> PreTrainedModel | tuple[PreTrainedModel, dict[str, list]]:
    """Load a pretrained model for `task` from a local folder or a Hub id, safetensors weights only.

    A classification head missing from the checkpoint is initialised at random (e.g. AfroXLMR's
    MLM checkpoint); a head of another size is an error. With `output_loading_info`, returns
    (model, transformers' loading info: `missing_keys`, `unexpected_keys`, ... as sorted lists), so
    that weights initialised at random are known (see `missing_head`). `add_pooling_layer=False`
    (task "base") builds the encoder without its pooler.
    """
    auto_class = _auto_class(task)
    name = str(name_or_path)
    if looks_local(name):
        folder = Path(name).expanduser()
        check_weights(folder)
        name = str(folder)
    else:
        from afrocomet.models.hub import check_hub_id

        check_hub_id(name)  # no network: one line now, not half a minute of retries
    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": trust_remote_code,
                              "ignore_mismatched_sizes": False}
    if task == "classification":
        kwargs["num_labels"] = num_labels
        if id2label is not None:
            if len(id2label) != num_labels:
                raise AfroCometError(f"id2label has {len(id2label)} labels but num_labels is {num_labels}")
            kwargs["id2label"] = {int(i): str(v) for i, v in id2label.items()}
            kwargs["label2id"] = {str(v): int(i) for i, v in id2label.items()}
    if add_pooling_layer is not None:
        kwargs["add_pooling_layer"] = add_pooling_layer
    try:
        model, info = auto_class.from_pretrained(name, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, TypeError, SafetensorError) as exc:
        hint = ""
        if isinstance(exc, OSError):
            hint = (" (not found locally and could not be downloaded: no network, or HF_HUB_OFFLINE set?"
                    " Pass a local folder with config.json and model.safetensors)")
        raise AfroCometError(f"could not load {task} model {name!r}{hint}: {first_line(exc)}") from exc
    if not output_loading_info:
        return model
    return model, {k: sorted(v, key=str) if isinstance(v, (set, list, tuple)) else v for k, v in info.items()}


def missing_head(model: PreTrainedModel, missing_keys: list[str]) -> list[str]:
    """The weights of `model`'s head (everything beside the encoder, `base_model_prefix`) that the
    checkpoint lacked, i.e. that transformers initialised at random (`missing_keys` from
    `load_pretrained(..., output_loading_info=True)`)."""
    prefix = model.base_model_prefix + "."
    return [k for k in missing_keys if not k.startswith(prefix)]


def missing_head_weights(name_or_path: str | Path, task: str = "mlm", trust_remote_code: bool = False) -> list[str]:
    """The head weights of a `task` model that a local folder's safetensors lack, read from the
    files' headers only (no tensor is loaded, the model is built on `meta`): what `load_pretrained`
    would initialise at random. Tied weights (a decoder tied to the embeddings) do not count."""
    from transformers import AutoConfig

    folder = check_weights(name_or_path)
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = _auto_class(task).from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise AfroCometError(f"could not read the {task} model's shape: {first_line(exc)}", path=folder) from exc
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    prefix = model.base_model_prefix + "."
    head = [k for k, _ in model.named_parameters(remove_duplicate=False) if not k.startswith(prefix) and k not in tied]
    saved = saved_keys(folder)
    return [k for k in head if k not in saved]


def saved_keys(folder: str | Path) -> set[str]:
    """The tensor names in a checked model folder's safetensors (headers only)."""
    from safetensors import safe_open

    keys: set[str] = set()
    for shard in _safetensors_files(Path(folder)):
        with safe_open(str(shard), framework="pt") as f:
            keys |= set(f.keys())
    return keys


def model_config(name: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """The config of a preset, a local folder or a Hub id (read from its config.json only)."""
    if name in PRESETS:
        return get_preset(name).to_config()
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(Path(name).expanduser()) if looks_local(name) else name,
                                          trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise AfroCometError(f"could not read the model's config.json: {first_line(exc)}", path=name) from exc


def looks_local(name: str) -> bool:
    """True if `name` is meant as a local path rather than a Hub id like "owner/model"."""
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or name.endswith(("/", "\\"))
        or name.count("/") > 1
        or "\\" in name
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors are often many lines long)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
