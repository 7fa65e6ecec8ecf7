"""Tiny random BERT masked LM saved with save_pretrained (prompt-debiasing work)."""
