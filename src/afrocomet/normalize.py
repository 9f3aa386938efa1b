"""Tokenizer coverage: how much of each language's text falls to `<unk>`, and a normalisation that
keeps the letters that would.

XLM-R's vocabulary (and so multilingual-e5's) has no piece for some Yoruba letters: `ǹ` (U+01F9),
`Ǹ`, `ḿ`, `Ḿ` become `<unk>`, while their canonical decompositions (NFD: `n` + U+0300, `m` +
U+0301, ...) are made of pieces that exist. `data.normalize: nfd-unknown` finds such characters in
the training text and adds one `Replace` rule per character to the tokenizer's own normalizer,
after the rules it had (XLM-R's NFKC would compose them again). Because the rule lives inside the
tokenizer, every text the run encodes (train, dev, test) and every saved folder (`afrocomet
predict`, `transformers.pipeline`) applies it, with nothing else to remember.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Iterable, Mapping, Sequence

from afrocomet.errors import AfroCometError

METASPACE = "▁"
CHUNK = 2048  # texts tokenized per call


def unknown_rate(tokenizer, texts: Sequence[str]) -> dict:
    """Token occurrences of `texts` (no special tokens) and how many are `<unk>`."""
    unk, tokens, hit = tokenizer.unk_token_id, 0, 0
    with_unk = 0
    for start in range(0, len(texts), CHUNK):
        for ids in tokenizer(list(texts[start:start + CHUNK]), add_special_tokens=False, truncation=False)["input_ids"]:
            n = ids.count(unk) if unk is not None else 0
            tokens, hit, with_unk = tokens + len(ids), hit + n, with_unk + (n > 0)
    return {"tokens": tokens, "unk": hit, "unk_rate": hit / tokens if tokens else 0.0, "texts": len(texts),
            "texts_with_unk": with_unk}


def _has_piece(backend, char: str) -> bool:
    return backend.token_to_id(char) is not None or backend.token_to_id(METASPACE + char) is not None


def nfd_rules(tokenizer, texts: Iterable[str]) -> dict[str, str]:
    """{character: its NFD form} for each character of `texts` (after the tokenizer's normalizer)
    that has no piece of its own while every character of its decomposition has one."""
    backend = tokenizer.backend_tokenizer
    normalize = backend.normalizer.normalize_str if backend.normalizer is not None else (lambda t: t)
    chars = set()
    for text in texts:
        chars.update(normalize(text))
    rules = {}
    for char in sorted(chars):
        nfd = unicodedata.normalize("NFD", char)
        if nfd != char and not _has_piece(backend, char) and all(_has_piece(backend, c) for c in nfd):
            rules[char] = nfd
    return rules


def with_replacements(tokenizer, rules: Mapping[str, str]):
    """The same tokenizer (ids, special tokens; saved as a `PreTrainedTokenizerFast`) whose normalizer
    then replaces each character of `rules` by its value. Without rules, `tokenizer` itself."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if not rules:
        return tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise AfroCometError("data.normalize needs a fast (tokenizers) tokenizer")
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    replace = [{"type": "Replace", "pattern": {"String": k}, "content": v} for k, v in rules.items()]
    data["normalizer"] = {"type": "Sequence", "normalizers": [data["normalizer"], *replace]
                          if data.get("normalizer") else replace}
    backend = Tokenizer.from_str(json.dumps(data))
    specials = {k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    # the generic class: transformers 5 rebuilds an XLM-R tokenizer's normalizer on loading (the rules
    # would be lost in saved folders); the generic one loads tokenizer.json as it is
    new = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=tokenizer.model_max_length, **specials)
    if len(new) != len(tokenizer):
        raise AfroCometError("the normalised tokenizer has another vocabulary size")
    return new


def coverage(tokenizer, texts_by_language: Mapping[str, Sequence[str]], mode: str = "none"):
    """(tokenizer to use, report): each language's `<unk>` rate under `tokenizer`, and with
    `mode` "nfd-unknown" the rules found and each language's rate under the normalised tokenizer."""
    before = {lang: unknown_rate(tokenizer, texts) for lang, texts in texts_by_language.items()}
    report: dict = {"normalize": mode, "per_language": before}
    if mode == "none":
        return tokenizer, report
    if mode != "nfd-unknown":
        raise AfroCometError(f"unknown data.normalize '{mode}' (allowed: none, nfd-unknown)")
    rules = nfd_rules(tokenizer, (t for texts in texts_by_language.values() for t in texts))
    normalised = with_replacements(tokenizer, rules)
    report["rules"] = {f"U+{ord(k):04X} {k}": " + ".join(f"U+{ord(c):04X}" for c in v) for k, v in rules.items()}
    report["per_language_normalized"] = {lang: unknown_rate(normalised, texts)
                                         for lang, texts in texts_by_language.items()} if rules else before
    return normalised, report
