"""Vocabulary trimming: keep only the embedding rows that the target languages' text uses.

93% of the paper's `comet` student (64.0M of 68.9M parameters) is its 250,002 x 256 word-embedding
table, and AfriSenti's five languages use a small part of XLM-R's pieces. Trimming

1. counts the token ids a tokenizer produces on some texts (`count_token_ids`),
2. keeps the special and added tokens, the pieces seen at least `min_count` times and, by default,
   the one-character pieces of every character seen, so that unseen words still split into
   sub-pieces (`select_token_ids`),
3. copies the kept rows of the word embeddings, and of a masked-LM head (decoder weight, still tied,
   and bias), into a smaller model whose config has the new `vocab_size` and special ids
   (`trim_model`), and
4. rebuilds the tokenizer's Unigram (or WordLevel) model from the kept pieces with their scores,
   with the same normalizer, pre-tokenizer, decoder and post-processor (special ids remapped), in
   the same transformers class (`trim_tokenizer`).

Kept ids stay in their old order, so `<s> <pad> </s> <unk>` keep ids 0-3 and `<mask>` stays last.
On a text whose pieces were all kept the trimmed tokenizer gives the same pieces (the best
segmentation over a subset that contains it is unchanged) and the trimmed model the same outputs;
other text falls back to the best segmentation with the kept pieces, and to `<unk>` where no kept
piece covers a character. `trim_folder` does it all to a saved Hugging Face folder, atomically;
`trim_together` trims a teacher and a student that share one tokenizer with the same kept ids.
"""

from __future__ import annotations

import collections
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from tokenizers import Tokenizer
from torch import nn

from afrocomet.errors import AfroCometError

SPECIAL_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")
COUNT_CHUNK = 2048  # texts tokenized per call
FILLER_CHAR = "\ue000"  # a private-use character: filler pieces never match real text


@dataclass
class VocabReport:
    """What trimming kept (one model; `trim_together` gives one report per model)."""

    rows_kept: int
    rows_total: int
    parameters_before: int
    parameters_after: int
    occurrences: int  # token occurrences in the counted texts (specials not added)
    occurrences_kept: int  # of which are kept pieces
    texts: int
    min_count: int

    @property
    def kept_fraction(self) -> float:
        """Share of the counted texts' token occurrences whose piece was kept."""
        return self.occurrences_kept / self.occurrences if self.occurrences else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "kept_fraction": self.kept_fraction}

    def summary(self) -> str:
        less = 1 - self.parameters_after / self.parameters_before if self.parameters_before else 0.0
        return (f"kept {self.rows_kept:,} of {self.rows_total:,} vocabulary rows "
                f"({100 * self.rows_kept / self.rows_total:.1f}%); parameters {self.parameters_before:,} -> "
                f"{self.parameters_after:,} (-{100 * less:.1f}%); kept pieces cover "
                f"{100 * self.kept_fraction:.2f}% of {self.occurrences:,} token occurrences in {self.texts:,} texts")


# ----------------------------------------------------------------------------- which ids to keep


def count_token_ids(tokenizer, texts: Iterable[str]) -> collections.Counter:
    """How often each token id occurs when `tokenizer` encodes `texts` (no special tokens added)."""
    counts: collections.Counter = collections.Counter()
    chunk: list[str] = []

    def flush() -> None:
        for ids in tokenizer(chunk, add_special_tokens=False, truncation=False)["input_ids"]:
            counts.update(ids)
        chunk.clear()

    for text in texts:
        chunk.append(text)
        if len(chunk) == COUNT_CHUNK:
            flush()
    if chunk:
        flush()
    return counts


def special_token_ids(tokenizer) -> set[int]:
    """Ids always kept: special and added tokens, and every id up to the padding id.

    XLM-R numbers positions from `pad_token_id + 1`, so the padding id must not move; keeping the
    ids below it (XLM-R: `<s>`) guarantees that.
    """
    ids = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    if tokenizer.pad_token_id is not None:
        ids |= set(range(tokenizer.pad_token_id + 1))
    return ids


def select_token_ids(tokenizer, counts: Mapping[int, int], *, min_count: int = 1,
                     keep_characters: bool = True) -> list[int]:
    """The sorted ids to keep: specials, ids counted `min_count` times or more and, with
    `keep_characters`, the one-character pieces of every character in a counted piece."""
    if min_count < 1:
        raise AfroCometError(f"min_count must be >= 1, got {min_count}")
    size = len(tokenizer)
    keep = special_token_ids(tokenizer) | {i for i, n in counts.items() if n >= min_count}
    if keep_characters:
        seen = [p for p in tokenizer.convert_ids_to_tokens(sorted(counts)) if p is not None]
        to_id = tokenizer.backend_tokenizer.token_to_id  # None when the piece does not exist
        keep |= {i for i in map(to_id, set("".join(seen))) if i is not None}
    return sorted(i for i in keep if 0 <= i < size)


def _check_keep(keep: Sequence[int], rows: int) -> torch.Tensor:
    index = torch.as_tensor(list(keep), dtype=torch.long)  # [K]
    if index.numel() == 0:
        raise AfroCometError("cannot trim the vocabulary to no token")
    if bool((index[1:] <= index[:-1]).any()) or int(index[0]) < 0 or int(index[-1]) >= rows:
        raise AfroCometError(f"kept ids must be sorted, unique and in [0, {rows}), got {index[:5].tolist()}...")
    return index


# ----------------------------------------------------------------------------- models


def trim_model(model: nn.Module, keep: Sequence[int]) -> nn.Module:
    """Keep only the rows `keep` (sorted old ids) of the word embeddings and of a tied masked-LM
    head; updates `config.vocab_size` and the special ids. Changes `model` in place and returns it."""
    old = model.get_input_embeddings()  # [V, H]
    index = _check_keep(keep, old.num_embeddings)  # [K]
    new_id = {int(old_id): i for i, old_id in enumerate(index.tolist())}
    config = model.config
    if config.pad_token_id is not None and new_id.get(config.pad_token_id) != config.pad_token_id:
        raise AfroCometError(f"trimming must keep the padding id {config.pad_token_id} and every id below it "
                             "(XLM-R numbers positions from it)")
    new = nn.Embedding(len(index), old.embedding_dim, padding_idx=old.padding_idx,
                       device=old.weight.device, dtype=old.weight.dtype)  # [K, H]
    with torch.no_grad():
        new.weight.copy_(old.weight[index])
    new.weight.requires_grad_(old.weight.requires_grad)
    _trim_lm_head(model, old, new, index)
    model.set_input_embeddings(new)
    config.vocab_size = len(index)
    for field in SPECIAL_ID_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int):
            if value not in new_id:
                raise AfroCometError(f"trimming would drop the model's {field} {value}")
            setattr(config, field, new_id[value])
    return model


def _trim_lm_head(model: nn.Module, old: nn.Embedding, new: nn.Embedding, index: torch.Tensor) -> None:
    """The masked-LM decoder [V, H] + bias [V] -> [K, H] + [K]; a decoder tied to the embeddings
    stays tied, and a bias shared with the head (XLM-R's `lm_head.bias`, BERT's
    `cls.predictions.bias`) stays shared."""
    from afrocomet.models.build import mlm_head

    get = getattr(model, "get_output_embeddings", None)
    out = get() if get is not None else None
    if out is None:
        return
    if not isinstance(out, nn.Linear) or out.out_features != old.num_embeddings:
        raise AfroCometError(f"cannot trim an output head of type {type(out).__name__}")
    head = mlm_head(model)  # XLM-R `lm_head`, BERT `cls` (its decoder in `cls.predictions`)
    trimmed: dict[int, nn.Parameter] = {}  # id(old parameter) -> its trimmed copy

    def cut(p: nn.Parameter) -> nn.Parameter:
        if id(p) not in trimmed:
            trimmed[id(p)] = nn.Parameter(p.detach()[index].clone(), requires_grad=p.requires_grad)
        return trimmed[id(p)]

    for module in list(head.modules()):
        if module is out:
            continue  # the decoder itself is replaced below
        for name, p in list(module.named_parameters(recurse=False)):
            if p.dim() == 1 and p.shape[0] == old.num_embeddings:
                setattr(module, name, cut(p))  # [K]
    decoder = nn.Linear(out.in_features, len(index), bias=out.bias is not None,
                        device=out.weight.device, dtype=out.weight.dtype)
    decoder.weight = new.weight if out.weight is old.weight else cut(out.weight)  # [K, H]
    if out.bias is not None:
        decoder.bias = cut(out.bias)  # [K], the head's own bias when they were shared
    model.set_output_embeddings(decoder)


# ----------------------------------------------------------------------------- tokenizers


def _backend_json(tokenizer) -> dict:
    if not getattr(tokenizer, "is_fast", False):
        raise AfroCometError("vocabulary trimming needs a fast (tokenizers) tokenizer")
    return json.loads(tokenizer.backend_tokenizer.to_str())


def _remap_ids(node, new_id: Mapping[int, int]):
    """Special-token ids inside a post-processor / padding config, old -> new (recursively)."""
    if isinstance(node, list):
        return [_remap_ids(v, new_id) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "ids" and isinstance(value, list):  # TemplateProcessing special_tokens
            out[key] = [new_id[i] for i in value]
        elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:  # Roberta/BertProcessing
            out[key] = [value[0], new_id[value[1]]]
        elif key == "pad_id" and isinstance(value, int):
            out[key] = new_id[value]
        else:
            out[key] = _remap_ids(value, new_id)
    return out


def _rebuild(tokenizer, data: dict, new_id: Mapping[int, int]):
    """`tokenizer`'s class around the backend described by `data` (model already replaced); added
    tokens, the post-processor and padding get their new ids."""
    for token in data.get("added_tokens") or []:
        token["id"] = new_id[token["id"]]
    for key in ("post_processor", "padding"):
        if data.get(key) is not None:
            data[key] = _remap_ids(data[key], new_id)
    backend = Tokenizer.from_str(json.dumps(data))
    specials = {k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    new = type(tokenizer)(tokenizer_object=backend, model_max_length=tokenizer.model_max_length, **specials)
    for token in data.get("added_tokens") or []:
        if new.convert_tokens_to_ids(token["content"]) != token["id"]:
            raise AfroCometError(f"the rebuilt tokenizer maps {token['content']!r} to another id")
    return new


def _model_pieces(data: dict) -> list[str]:
    model = data["model"]
    if model.get("type") == "Unigram":
        return [piece for piece, _ in model["vocab"]]
    if model.get("type") == "WordLevel":
        return [p for p, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    raise AfroCometError(f"vocabulary trimming supports Unigram (XLM-R, sentencepiece) and WordLevel "
                         f"tokenizers, not {model.get('type')}")


def trim_tokenizer(tokenizer, keep: Sequence[int]):
    """The same tokenizer with only the ids `keep` (sorted old ids), renumbered 0..K-1 in order."""
    data = _backend_json(tokenizer)
    pieces = _model_pieces(data)
    index = _check_keep(keep, len(tokenizer)).tolist()
    new_id = {old: new for new, old in enumerate(index)}
    model = data["model"]
    if model["type"] == "Unigram":
        unk = model.get("unk_id")
        if unk is not None and unk not in new_id:
            raise AfroCometError(f"trimming would drop the tokenizer's unknown-token id {unk}")
        model["vocab"] = [model["vocab"][i] for i in index if i < len(pieces)]
        model["unk_id"] = None if unk is None else new_id[unk]
        if model.get("byte_fallback"):
            raise AfroCometError("trimming a byte-fallback Unigram tokenizer is not supported")
    else:
        if model.get("unk_token") not in (None, *(pieces[i] for i in index if i < len(pieces))):
            raise AfroCometError(f"trimming would drop the tokenizer's unknown token {model['unk_token']!r}")
        model["vocab"] = {pieces[i]: new_id[i] for i in index if i < len(pieces)}
    return _rebuild(tokenizer, data, new_id)


def pad_unigram_vocab(tokenizer, size: int):
    """A Unigram tokenizer with `size` ids: the same pieces plus filler pieces that never match text
    (a private-use character), inserted before the trailing added tokens (`<mask>` stays last).

    Stands in for a 250,002-piece XLM-R tokenizer in tests and benchmarks without the Hub: real
    text tokenizes exactly as before, only the vocabulary (and so the embedding table) is full size.
    """
    data = _backend_json(tokenizer)
    pieces = _model_pieces(data)
    if data["model"]["type"] != "Unigram":
        raise AfroCometError("pad_unigram_vocab needs a Unigram tokenizer")
    vocab = data["model"]["vocab"]
    added = {t["id"] for t in data.get("added_tokens") or []}
    cut = len(pieces)
    while cut > 0 and cut - 1 in added:  # trailing added tokens, e.g. <mask>
        cut -= 1
    fill = size - len(tokenizer)
    if fill < 0:
        raise AfroCometError(f"the tokenizer already has {len(tokenizer)} ids, more than {size}")
    low = min(score for _, score in vocab) - 1.0
    vocab[cut:cut] = [[f"{FILLER_CHAR}{i:x}", low] for i in range(fill)]
    new_id = {i: (i if i < cut else i + fill) for i in range(len(tokenizer))}
    return _rebuild(tokenizer, data, new_id)


# ----------------------------------------------------------------------------- whole models and folders


def _report(rows: int, keep: Sequence[int], counts: Mapping[int, int], texts: int, min_count: int,
            before: int, after: int) -> VocabReport:
    kept = set(keep)
    return VocabReport(rows_kept=len(keep), rows_total=rows, parameters_before=before, parameters_after=after,
                       occurrences=sum(counts.values()),
                       occurrences_kept=sum(n for i, n in counts.items() if i in kept),
                       texts=texts, min_count=min_count)


def trim_together(models: Mapping[str, nn.Module], tokenizer, texts: Sequence[str], *, min_count: int = 1,
                  keep_characters: bool = True):
    """Trim models that share `tokenizer` (e.g. teacher and student) with the same kept ids, in place.

    Returns (trimmed tokenizer, kept old ids, {name: VocabReport}).
    """
    from afrocomet.models.build import count_parameters

    if min_count < 1:
        raise AfroCometError(f"min_count must be >= 1, got {min_count}")
    if not texts:
        raise AfroCometError("no text to count the vocabulary on")
    for name, model in models.items():
        rows = model.get_input_embeddings().num_embeddings
        if rows < len(tokenizer):
            raise AfroCometError(f"{name}: the embedding has {rows} rows but the tokenizer {len(tokenizer)} ids")
    counts = count_token_ids(tokenizer, texts)
    keep = select_token_ids(tokenizer, counts, min_count=min_count, keep_characters=keep_characters)
    reports = {}
    for name, model in models.items():
        rows, before = model.get_input_embeddings().num_embeddings, count_parameters(model)
        trim_model(model, keep)
        reports[name] = _report(rows, keep, counts, len(texts), min_count, before, count_parameters(model))
    return trim_tokenizer(tokenizer, keep), keep, reports


def _task_of(config) -> str:
    archs = config.architectures or []
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "mlm"
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "classification"
    return "base"


def _has_pooler(folder: Path) -> bool:
    """True when the folder's weights hold a pooler (an encoder like multilingual-e5 has none)."""
    from afrocomet.models.build import saved_keys

    return any(k.startswith("pooler.") or ".pooler." in k for k in saved_keys(folder))


def check_trim_input(model_dir: str | Path, min_count: int, out_dir: str | Path | None = None,
                     inputs: Sequence[tuple[str, str | Path | None]] = ()) -> Path:
    """The model folder, if it holds config.json and safetensors weights, and `min_count` >= 1; with
    `out_dir`, the output folder too (`afrocomet.outputs`): not the model folder nor any of `inputs`
    (nor inside or around them), and new, empty or holding only what a trimmed folder holds."""
    from afrocomet.models.build import check_weights
    from afrocomet.outputs import MODEL_FILES, TOKENIZER_FILES, check_output_folder

    if min_count < 1:
        raise AfroCometError(f"min_count must be >= 1, got {min_count}")
    folder = Path(model_dir).expanduser()
    if out_dir is not None:
        check_output_folder(out_dir, [("model folder", folder), *inputs], writes=(*MODEL_FILES, *TOKENIZER_FILES),
                            what="trim-vocab")
    check_weights(folder)
    return folder


def trim_folder(model_dir: str | Path, out_dir: str | Path, texts: Sequence[str], *, min_count: int = 1,
                keep_characters: bool = True) -> VocabReport:
    """Trim a saved Hugging Face folder (masked LM, classifier or encoder, with its tokenizer) to
    the pieces of `texts`; the new folder is written atomically."""
    from transformers import AutoConfig

    from afrocomet.io import atomic_dir
    from afrocomet.models.build import first_line, load_pretrained
    from afrocomet.quiet import no_progress_bars
    from afrocomet.tokenizer import load_tokenizer, write_tokenizer

    folder = check_trim_input(model_dir, min_count, out_dir)
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise AfroCometError(f"cannot read config.json: {first_line(exc)}", path=folder) from exc
    task = _task_of(config)
    kwargs = {"num_labels": config.num_labels, "id2label": config.id2label} if task == "classification" else {}
    if task == "base" and not _has_pooler(folder):
        kwargs["add_pooling_layer"] = False  # never save a randomly initialised pooler as if it were real
    with no_progress_bars():
        model, info = load_pretrained(folder, task, output_loading_info=True, **kwargs)
        if info["missing_keys"]:  # initialised at random: never saved as if they were real weights
            raise AfroCometError(f"the {task} model lacks {len(info['missing_keys'])} weights (e.g. "
                                 f"{info['missing_keys'][0]}); trimming would save them at random", path=folder)
        tokenizer, _, reports = trim_together({"model": model}, load_tokenizer(folder), texts, min_count=min_count,
                                              keep_characters=keep_characters)
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)  # safetensors, decoder tied
            write_tokenizer(tokenizer, tmp, model.config)  # with model_max_length
    return reports["model"]


def afrisenti_texts(languages: Sequence[str], data_dir: str | Path | None = None,
                    extra_text: Sequence[str | Path] = (), *, download: bool = True) -> list[str]:
    """AfriSenti train texts of `languages` (never dev or test), then the lines of `extra_text` files."""
    from afrocomet.data.afrisenti import load_afrisenti
    from afrocomet.data.corpus import read_extra_text

    extra = read_extra_text([str(p) for p in extra_text])  # checked first: a bad file fails fast
    datasets = load_afrisenti(list(languages), data_dir, splits=("train",), download=download)
    return [t for ds in datasets.values() for t in ds.texts("train")] + extra
