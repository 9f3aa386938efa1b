"""Small models and tokenizers that the tests build themselves (no download)."""

from __future__ import annotations

import torch

WORDS = "ina son wannan sosai ban ji dadin ba yau rana ce mai kyau allah ya isa gaskiya".split()


def tiny_tokenizer():
    """A word-level tokenizer with XLM-R's special tokens: <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")


def tiny_model(vocab_size: int, hidden: int = 32, layers: int = 2):
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                              intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=3,
                              pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return XLMRobertaForSequenceClassification(config).eval()
