"""Tiny random BERT masked LM with a hand-written WordPiece vocabulary, saved to a tmp folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

__all__ = ["TINY_BERT_VOCAB", "tiny_bert_dir"]

# Special tokens, the default template's words, the four view words as single tokens, and a few
# prompt words. "backside" is deliberately two pieces (back ##side) to test the one-token check.
TINY_BERT_VOCAB: tuple[str, ...] = (
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "this",
    "image",
    "is",
    "depicting",
    "a",
    "view",
    "of",
    "front",
    "side",
    "back",
    "overhead",
    "smiling",
    "rabbit",
    "dog",
    "cat",
    "and",
    "happy",
    "colorful",
    "toucan",
    "with",
    "large",
    "beak",
    "high",
    "quality",
    "photo",
    "delicious",
    "burger",
    ",",
    ".",
    "##s",
    "##side",
)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding a random 2-layer BertForMaskedLM and its WordPiece tokenizer."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    vocab_dir = tmp_path_factory.mktemp("tiny_bert_vocab")
    (vocab_dir / "vocab.txt").write_text("\n".join(TINY_BERT_VOCAB) + "\n")
    tokenizer = BertTokenizer.from_pretrained(str(vocab_dir))
    config = BertConfig(
        vocab_size=len(TINY_BERT_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        # Large random weights so view probabilities differ visibly between prompts.
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForMaskedLM(config).eval()
    model_dir = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir
