"""Tiny random Stable Diffusion pipelines saved with save_pretrained into temporary folders.

Shapes follow SD (4 latent channels, cross-attention on CLIP text embeddings, 77 tokens), widths
are tiny so that a UNet call takes milliseconds on CPU. Tests load them through the real loading
path (`StableDiffusionDenoiser.from_config` with `--sd.model_id <folder>`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sjc_dsds.random_models import build_tiny_sd, write_tiny_clip_vocab

__all__ = ["build_tiny_sd", "tiny_sd_dir", "tiny_sd_v_dir", "write_tiny_clip_vocab"]


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny epsilon-prediction SD (latents 4x32x32, VAE factor 2, 77 tokens)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_sd_v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny v-prediction SD (the SD 2.x 768-v parametrisation)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd_v"), prediction_type="v_prediction")
