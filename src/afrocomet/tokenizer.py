"""Tokenizers: load the teacher's own, or train an XLM-R-style one for the built-in default.

A trained tokenizer has the same shape as XLM-R's: a SentencePiece Unigram model with
sentencepiece's `nmt_nfkc` normalisation (case kept), the "▁" metaspace, special tokens
`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3 and `<mask>` as the last id, and the templates
`<s> A </s>` and `<s> A </s></s> B </s>`. It is saved as a standard Hugging Face folder whose
`tokenizer_class` is XLM-R's, so `AutoTokenizer.from_pretrained(folder)` reloads it anywhere.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import Unigram
from transformers import AutoTokenizer, PreTrainedTokenizerBase, XLMRobertaTokenizerFast

from afrocomet.errors import AfroCometError
from afrocomet.io import atomic_dir
from afrocomet.models.build import first_line, looks_local
from afrocomet.models.presets import POSITION_OFFSET

# XLM-R's special tokens in XLM-R's id order; `<mask>` is appended after the learnt pieces.
SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>")
MASK_TOKEN = "<mask>"
UNK_ID = 3
METASPACE = "▁"
# Like sentencepiece: the rarest characters (0.05% of all occurrences) become <unk>, so that a
# handful of emoji do not eat the vocabulary and a small vocab_size still trains.
CHARACTER_COVERAGE = 0.9995
# Scores are rounded before the pieces are sorted: the trainer's hash-map order leaves noise
# around 1e-11 in them, and rounding makes two trainings on the same text give the same ids.
SCORE_DECIMALS = 6
FALLBACK_SCORE_STEP = 1e-4  # tokenizers' UnigramTrainer: min_score_penalty_delta
# Models that number positions from padding_idx + 1 = 2, like XLM-R: two rows of the table are never a position.
OFFSET_POSITIONS = frozenset({"xlm-roberta", "xlm-roberta-xl", "roberta", "camembert", "data2vec-text", "xmod"})
TOKENIZER_CONFIG = "tokenizer_config.json"


def load_tokenizer(name_or_path: str | Path, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a fast tokenizer from a local folder or a Hugging Face Hub id (e.g. Davlan/afro-xlmr-large)."""
    name = str(name_or_path)
    local = looks_local(name)
    if local:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise AfroCometError("tokenizer folder not found", path=folder)
        name = str(folder)
    else:
        from afrocomet.models.hub import check_hub_id

        check_hub_id(name)  # no network: one line now, not half a minute of retries
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if local:
            raise AfroCometError(f"not a tokenizer folder (needs tokenizer.json): {first_line(exc)}", path=name) from exc
        raise AfroCometError(
            f"could not load tokenizer {name!r} (not a tokenizer folder here and could not be "
            f"downloaded: no network, or HF_HUB_OFFLINE set? Pass a local folder with "
            f"tokenizer.json): {first_line(exc)}"
        ) from exc
    if not tokenizer.is_fast:
        raise AfroCometError(f"tokenizer {name!r} has no fast (tokenizers) version; afrocomet needs one")
    return tokenizer


def _nmt_nfkc() -> normalizers.Normalizer:
    """Sentencepiece's `nmt_nfkc` rule (what XLM-R uses) as a `tokenizers` Precompiled normalizer."""
    try:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as exc:  # protobuf is needed to read sentencepiece's normaliser spec
        raise AfroCometError(f"training a tokenizer needs sentencepiece>=0.2.1 and protobuf: {exc}") from exc
    spec_bytes = spm.SentencePieceNormalizer(rule_name="nmt_nfkc").serialized_normalizer_spec()
    spec = sentencepiece_model_pb2.NormalizerSpec.FromString(spec_bytes)
    return normalizers.Precompiled(spec.precompiled_charsmap)


def _empty_xlmr_tokenizer(normalizer: normalizers.Normalizer) -> Tokenizer:
    """The pipeline of transformers' XLM-R tokenizer around an untrained Unigram model."""
    tok = Tokenizer(Unigram())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    return tok


def _drop_rare_characters(texts: list[str], coverage: float) -> list[str]:
    """Replace the rarest characters (beyond `coverage` of all occurrences) by spaces."""
    counts = collections.Counter()
    for text in texts:
        counts.update(text)
    counts.pop(" ", None)
    total, kept = sum(counts.values()), 0
    rare: dict[int, str] = {}
    for char, n in counts.most_common():
        if kept >= coverage * total:
            rare[ord(char)] = " "
        kept += n
    return [text.translate(rare) for text in texts] if rare else texts


def train_tokenizer(texts: Iterable[str], vocab_size: int = 16000) -> XLMRobertaTokenizerFast:
    """Train an XLM-R-style SentencePiece Unigram tokenizer on `texts` (pass the training split only).

    `len(tokenizer) == vocab_size` whenever the text has enough distinct substrings; on a tiny
    text the trainer may return fewer pieces, so models must use `len(tokenizer)`. Characters
    rarer than sentencepiece's default coverage (99.95%) get no piece and encode as `<unk>`.
    The same texts give the same ids. `texts` is read into memory once. The ~38k AfriSenti
    training tweets of the five languages take about 20-30 s on two CPU cores (16k or 8k pieces).
    """
    min_size = len(SPECIAL_TOKENS) + 2
    if vocab_size < min_size:
        raise AfroCometError(f"vocab_size must be at least {min_size}, got {vocab_size}")
    normalizer = _nmt_nfkc()
    normalized = [normalizer.normalize_str(t) for t in texts if t and not t.isspace()]
    if not normalized:
        raise AfroCometError("cannot train a tokenizer on no text")
    normalized = _drop_rare_characters(normalized, CHARACTER_COVERAGE)

    tok = _empty_xlmr_tokenizer(normalizer)
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - 1,  # room for <mask> at the end
        special_tokens=list(SPECIAL_TOKENS),
        unk_token=SPECIAL_TOKENS[UNK_ID],
        show_progress=False,
    )
    try:
        tok.train_from_iterator(normalized, trainer=trainer, length=len(normalized))
    except Exception as exc:  # tokenizers raises a bare Exception, e.g. vocab smaller than the alphabet
        raise AfroCometError(f"tokenizer training failed with vocab_size={vocab_size}: {exc}") from exc
    return _wrap(_canonical_vocab(tok), normalizer)


def _canonical_vocab(tok: Tokenizer) -> list[tuple[str, float]]:
    """Specials first (XLM-R ids), learnt pieces sorted by score then text, `<mask>` last."""
    pieces = json.loads(tok.to_str())["model"]["vocab"]  # [[piece, log-prob], ...]
    head = [p for p, _ in pieces[: len(SPECIAL_TOKENS)]]
    if head != list(SPECIAL_TOKENS):
        raise AfroCometError(f"tokenizer trainer put special tokens at unexpected ids: {head}")
    learnt = _flatten_fallback_characters([(p, s) for p, s in pieces[len(SPECIAL_TOKENS):]])
    learnt = sorted(((p, round(s, SCORE_DECIMALS)) for p, s in learnt), key=lambda ps: (-ps[1], ps[0]))
    return [(p, 0.0) for p in SPECIAL_TOKENS] + learnt + [(MASK_TOKEN, 0.0)]


def _flatten_fallback_characters(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Give the characters the trainer re-added after pruning one common (the lowest) score.

    The trainer keeps every character of the alphabet: the pruned ones come back with scores
    lowest, lowest + 1e-4, lowest + 2e-4, ... assigned in hash-map (i.e. random) order.
    """
    lowest = min(s for _, s in pieces)
    rungs: dict[int, list[int]] = collections.defaultdict(list)
    for i, (piece, score) in enumerate(pieces):
        step = (score - lowest) / FALLBACK_SCORE_STEP
        if len(piece) == 1 and abs(step - round(step)) < 1e-3:
            rungs[round(step)].append(i)
    flat = list(pieces)
    rung = 0
    while rung in rungs:  # the ladder is contiguous from the lowest score up
        for i in rungs[rung]:
            flat[i] = (pieces[i][0], lowest)
        rung += 1
    return flat


def _wrap(vocab: list[tuple[str, float]], normalizer: normalizers.Normalizer) -> XLMRobertaTokenizerFast:
    """Build the final backend from `vocab` and wrap it in transformers' XLM-R tokenizer class."""
    tok = _empty_xlmr_tokenizer(normalizer)
    tok.model = Unigram(vocab, unk_id=UNK_ID, byte_fallback=False)
    bos, eos = SPECIAL_TOKENS[0], SPECIAL_TOKENS[2]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, 0), (eos, 2)],
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        pad_token=SPECIAL_TOKENS[1],
        eos_token=eos,
        sep_token=eos,
        cls_token=bos,
        unk_token=SPECIAL_TOKENS[UNK_ID],
        # A plain special token: transformers 5 reloads XLM-R's tokens without lstrip flags,
        # so "<mask>" must not swallow the space before it here either.
        mask_token=MASK_TOKEN,
    )


def model_max_length(config) -> int | None:
    """The longest input, in tokens with the specials, that a model with this (transformers) config
    holds: max_position_embeddings, less XLM-R's padding offset of 2 for XLM-R-style models; None
    when the config has no position table."""
    positions = getattr(config, "max_position_embeddings", None)
    if not positions:
        return None
    offset = POSITION_OFFSET if getattr(config, "model_type", None) in OFFSET_POSITIONS else 0
    return positions - offset


def write_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: str | Path, config=None) -> None:
    """Save `tokenizer` into `folder` (e.g. a model folder being written) with `model_max_length`
    set to what `config`'s model holds, so `pipeline(..., truncation=True)` cuts long texts.

    A tighter limit that the tokenizer already has is kept. The tokenizer object is not changed.
    """
    folder = Path(folder)
    tokenizer.save_pretrained(str(folder))
    limit = None if config is None else model_max_length(config)
    if limit is None:
        return
    path = folder / TOKENIZER_CONFIG
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    current = saved.get("model_max_length")
    if isinstance(current, int) and 0 < current < limit:
        limit = current
    saved["model_max_length"] = limit
    path.write_text(json.dumps(saved, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out_dir: str | Path, config=None) -> Path:
    """Write `tokenizer` as a Hugging Face folder, atomically (the old folder stays until done);
    with a model `config`, the folder records that model's maximum length (see `write_tokenizer`)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        write_tokenizer(tokenizer, tmp, config)
    return out_dir


def tokenizer_for(model_config, train_texts: Sequence[str]) -> PreTrainedTokenizerBase:
    """The tokenizer a run uses (`model_config` is a `config.ModelConfig`): the one it names, else the
    teacher's own, else (for a preset teacher) one trained on `train_texts`, the training split only."""
    from afrocomet.models.presets import is_preset

    m = model_config
    if m.tokenizer is not None:
        return load_tokenizer(m.tokenizer, trust_remote_code=m.trust_remote_code)
    if not is_preset(m.teacher):
        return load_tokenizer(m.teacher, trust_remote_code=m.trust_remote_code)
    return train_tokenizer(train_texts, vocab_size=m.vocab_size)
