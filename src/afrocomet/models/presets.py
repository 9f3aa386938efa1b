"""Model sizes: the paper's teacher and student, and smaller demo and test sizes.

Every preset is an XLM-R encoder; `ModelPreset.to_config` turns it into an `XLMRobertaConfig`
with XLM-R's conventions (pad=1, bos=0, eos=2, one token type, layer-norm eps 1e-5).
Parameter counts are those of `XLMRobertaModel` with its pooler, counted from built models
by `afrocomet.models.build.preset_parameters` (the tests pin the paper's two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import XLMRobertaConfig

from afrocomet.data.schema import LABELS
from afrocomet.errors import AfroCometError

# XLM-R's position ids start at pad_token_id + 1 = 2, so max_length tokens need max_length + 2 rows.
POSITION_OFFSET = 2


@dataclass(frozen=True)
class ModelPreset:
    """The shape of an XLM-R encoder."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 514
    description: str = ""

    def __post_init__(self) -> None:
        for field in ("num_layers", "hidden_size", "num_heads", "intermediate_size", "vocab_size"):
            if getattr(self, field) < 1:
                raise AfroCometError(f"model preset {self.name!r}: {field} must be positive")
        if self.hidden_size % self.num_heads:
            raise AfroCometError(
                f"model preset {self.name!r}: hidden_size {self.hidden_size} is not a multiple of "
                f"num_heads {self.num_heads}"
            )
        if self.max_position_embeddings <= POSITION_OFFSET:
            raise AfroCometError(f"model preset {self.name!r}: max_position_embeddings must be > {POSITION_OFFSET}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_length(self) -> int:
        """The longest input (special tokens included) the position table allows."""
        return self.max_position_embeddings - POSITION_OFFSET

    def to_config(
        self,
        *,
        vocab_size: int | None = None,
        num_labels: int = 3,
        id2label: dict[int, str] | None = None,
        **overrides: Any,
    ) -> XLMRobertaConfig:
        """An `XLMRobertaConfig` of this shape; `vocab_size` overrides the preset's (use len(tokenizer))."""
        if id2label is None:
            id2label = dict(enumerate(LABELS)) if num_labels == len(LABELS) else {i: f"LABEL_{i}" for i in range(num_labels)}
        if len(id2label) != num_labels:
            raise AfroCometError(f"id2label has {len(id2label)} labels but num_labels is {num_labels}")
        id2label = {int(i): str(label) for i, label in id2label.items()}
        values: dict[str, Any] = dict(
            vocab_size=self.vocab_size if vocab_size is None else vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            hidden_act="gelu",
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            initializer_range=0.02,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            id2label=id2label,
            label2id={label: i for i, label in id2label.items()},
        )
        values.update(overrides)
        if values["vocab_size"] <= values["pad_token_id"]:
            raise AfroCometError(f"model preset {self.name!r}: vocab_size {values['vocab_size']} is too small")
        try:
            return XLMRobertaConfig(**values)
        except (TypeError, ValueError) as exc:
            raise AfroCometError(f"model preset {self.name!r}: invalid config value: {exc}") from exc


def _presets(*presets: ModelPreset) -> dict[str, ModelPreset]:
    return {p.name: p for p in presets}


PRESETS: dict[str, ModelPreset] = _presets(
    ModelPreset(
        "afroxlmr-large", 24, 1024, 16, 4096, 250002, 514,
        "AfroXLMR-Large (Davlan/afro-xlmr-large): XLM-R large adapted to 17 African languages; "
        "the paper's teacher. 559,890,432 parameters.",
    ),
    ModelPreset(
        "comet", 6, 256, 4, 1024, 250002, 514,
        "AfroXLMR-Comet, the paper's student: 6 layers, hidden 256, FFN 1024, XLM-R vocabulary. "
        "The paper does not give the head count; 4 heads keeps XLM-R's head size of 64. "
        "68,937,216 parameters, 8.1x fewer than the teacher.",
    ),
    ModelPreset(
        "comet-384", 6, 384, 12, 1536, 250002, 514,
        "A student of multilingual-e5-small's width (hidden 384, 12 heads of 32, FFN 1536), 6 layers, so "
        "that --student-init layers can copy e5's embeddings and every other layer (and PCA init keeps "
        "every direction). 106,993,920 parameters; 10,795,392 outside the embeddings, 2.0x fewer than "
        "e5-small's 21,442,176.",
    ),
    ModelPreset(
        "comet-384-l3", 3, 384, 12, 1536, 250002, 514,
        "comet-384 with 3 layers (every 4th of e5-small's 12 under --student-init layers). 101,670,528 "
        "parameters; 5,472,000 outside the embeddings, 3.9x fewer than e5-small's.",
    ),
    ModelPreset(
        "comet-384-l2", 2, 384, 12, 1536, 250002, 514,
        "comet-384 with 2 layers (every 6th of e5-small's 12 under --student-init layers). 99,896,064 "
        "parameters; 3,697,536 outside the embeddings, 5.8x fewer than e5-small's.",
    ),
    ModelPreset(
        "demo-teacher", 4, 256, 4, 1024, 8000, 130,
        "Built-in default teacher, pretrained from scratch on AfriSenti text with an 8k tokenizer, "
        "then fine-tuned; 4 layers x 256 so that it trains within the 15-minute CPU budget. 130 positions = "
        "max_length 128 + 2. 5,306,880 parameters.",
    ),
    ModelPreset(
        "demo-student", 1, 64, 2, 256, 8000, 130,
        "Built-in default student: a quarter of the teacher's layers, as the paper's comet has of "
        "AfroXLMR-Large's (6 of 24): 1 layer, hidden 64, 2 heads of size 32, FFN 256; 574,656 parameters, "
        "9.2x fewer than demo-teacher (the paper's ratio is 8.1x).",
    ),
    ModelPreset(
        "tiny-teacher", 2, 64, 4, 128, 1000, 66,
        "Test and --quick teacher: a whole pipeline runs in seconds on a CPU.",
    ),
    ModelPreset(
        "tiny-student", 1, 32, 2, 64, 1000, 66,
        "Test and --quick student: one layer, so layer mapping from tiny-teacher is 2 -> 1.",
    ),
)


def is_preset(name: str) -> bool:
    """True when `name` is a preset (else it is a Hugging Face id or a folder)."""
    return name in PRESETS


def get_preset(name: str) -> ModelPreset:
    """The preset called `name`."""
    try:
        return PRESETS[name]
    except KeyError:
        raise AfroCometError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}") from None
