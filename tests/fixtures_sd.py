"""Tiny random Stable Diffusion saved with save_pretrained (filled in by the score-model work)."""
