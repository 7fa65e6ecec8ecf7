"""Randomly initialised, SD-shaped pipelines saved with save_pretrained: for tests and benchmarks.

No weights are downloaded: the UNet, VAE and CLIP text model are drawn from a seeded RNG and the
CLIP tokenizer uses a small hand-written byte-level BPE vocabulary (77 tokens per prompt). The
saved folder loads through the real path (`--sd.model_id <folder>`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sjc_dsds.score import SD_BETA_END, SD_BETA_SCHEDULE, SD_BETA_START

TEXT_WIDTH = 32
LATENT_SIDE = 32


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2/CLIP's byte-to-unicode table)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in range(256)]


def write_tiny_clip_vocab(folder: Path) -> tuple[Path, Path]:
    """Write a CLIP-style vocab.json (bytes, end-of-word bytes, a few merges) and merges.txt."""
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("o", "f</w>"), ("b", "u")]
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += _byte_symbols() + [symbol + "</w>" for symbol in _byte_symbols()]
    tokens += [left + right for left, right in merges]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    merges_path.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return vocab_path, merges_path


def _random_components(prediction_type: str) -> tuple:
    """A random SD-shaped UNet, VAE (downsampling 2) and CLIP text model, drawn from torch's RNG."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=LATENT_SIDE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=(2, 4),
        norm_num_groups=8,
        use_linear_projection=prediction_type == "v_prediction",
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=2 * LATENT_SIDE,
    )
    text_config = CLIPTextConfig(
        vocab_size=600,
        hidden_size=TEXT_WIDTH,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return unet, vae, CLIPTextModel(text_config)


def _sd15_components() -> tuple:
    """Random UNet, VAE and text model with SD 1.5's shapes (860M + 84M + 123M parameters)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text_config = CLIPTextConfig(  # CLIP ViT-L/14's text tower, as in SD 1.5
        vocab_size=600,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return unet, vae, CLIPTextModel(text_config)


def random_sd_pipeline(
    vocab_folder: Path, prediction_type: str = "epsilon", seed: int = 0, size: str = "tiny"
):
    """A random StableDiffusionPipeline: `size` "tiny" (tests) or "sd15" (SD 1.5's shapes)."""
    from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    # Seed the weights without touching the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if size == "sd15":
            unet, vae, text_encoder = _sd15_components()
        else:
            unet, vae, text_encoder = _random_components(prediction_type)
    vocab_path, merges_path = write_tiny_clip_vocab(vocab_folder)
    tokenizer = CLIPTokenizer(vocab=str(vocab_path), merges=str(merges_path), model_max_length=77)
    # SD 1.x ships a PNDM config, SD 2.x 768-v a DDIM one; both carry the same beta schedule.
    schedule = dict(beta_start=SD_BETA_START, beta_end=SD_BETA_END, beta_schedule=SD_BETA_SCHEDULE)
    if prediction_type == "epsilon":
        scheduler = PNDMScheduler(**schedule, skip_prk_steps=True, steps_offset=1)
    else:
        scheduler = DDIMScheduler(
            **schedule, prediction_type=prediction_type, clip_sample=False, steps_offset=1
        )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sd(
    folder: Path, prediction_type: str = "epsilon", seed: int = 0, size: str = "tiny"
) -> Path:
    """Build a random SD-shaped pipeline and save it under `folder/model` with save_pretrained."""
    pipeline = random_sd_pipeline(folder / "vocab", prediction_type, seed, size)
    pipeline.save_pretrained(folder / "model")
    return folder / "model"


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random CLIPModel (224 px images, 32-wide towers) and CLIPProcessor saved in `folder`."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    tower = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=600, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, **tower
        ),
        vision_config=dict(image_size=224, patch_size=32, **tower),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    vocab_path, merges_path = write_tiny_clip_vocab(folder / "vocab")
    tokenizer = CLIPTokenizer(vocab=str(vocab_path), merges=str(merges_path), model_max_length=77)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    return folder / "model"


# torchvision's VGG16 `features`: (index of each conv layer, in channels, out channels).
VGG16_CONVS = (
    (0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
    (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
    (26, 512, 512), (28, 512, 512),
)  # fmt: skip


def random_vgg16_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the keys and shapes of torchvision's VGG16 `features` (He-normal)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for index, c_in, c_out in VGG16_CONVS:
        std = (2.0 / (9 * c_in)) ** 0.5
        state[f"features.{index}.weight"] = (
            torch.randn(c_out, c_in, 3, 3, generator=generator) * std
        )
        state[f"features.{index}.bias"] = torch.zeros(c_out)
    return state


# A tiny SentencePiece-style unigram vocabulary: T5's three specials, then lower-case pieces.
_TINY_T5_PIECES = ("▁a", "▁photo", "▁of", "▁the", "▁bun", "▁horse", "▁", "a", "e", "o", "n", "s")


def tiny_t5_tokenizer(max_length: int = 77):
    """A T5 tokenizer (tokenizers backend, unigram) over a hand-written vocabulary: no download."""
    from transformers import T5Tokenizer

    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    pieces = list(dict.fromkeys(_TINY_T5_PIECES + tuple(letters)))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece, -1.0 - 0.1 * index) for index, piece in enumerate(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def random_if_pipeline(seed: int = 0, prediction_type: str = "epsilon"):
    """A random IF stage-I pipeline: 64 px UNet with 6 output channels, tiny T5, IF's scheduler."""
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    text_config = T5Config(
        vocab_size=len(tokenizer),
        d_model=TEXT_WIDTH,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(text_config)
        # IF-I's block layout (simple cross-attention with added K/V and text-pooled time
        # embedding), attention only at 16x16, so a guided 64x64 call takes ~50 ms on one core.
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=3,
            out_channels=6,
            layers_per_block=1,
            block_out_channels=(16, 32, 32),
            down_block_types=(
                "ResnetDownsampleBlock2D",
                "ResnetDownsampleBlock2D",
                "SimpleCrossAttnDownBlock2D",
            ),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            up_block_types=(
                "SimpleCrossAttnUpBlock2D",
                "ResnetUpsampleBlock2D",
                "ResnetUpsampleBlock2D",
            ),
            cross_attention_dim=TEXT_WIDTH,
            encoder_hid_dim=TEXT_WIDTH,
            attention_head_dim=8,
            addition_embed_type="text",
            addition_embed_type_num_heads=2,
            cross_attention_norm="group_norm",
            resnet_time_scale_shift="scale_shift",
            act_fn="gelu",
            norm_num_groups=8,
        )
    # IF-I-XL-v1.0's scheduler_config.json (thresholding and learned variance are sampler-side).
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        beta_start=0.0001,
        beta_end=0.02,
        clip_sample=True,
        clip_sample_range=1.5,
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
        prediction_type=prediction_type,
        variance_type="learned_range",
    )
    return IFPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def build_tiny_if(folder: Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Build a random IF stage-I pipeline and save it under `folder/model` with save_pretrained."""
    pipeline = random_if_pipeline(seed, prediction_type)
    pipeline.save_pretrained(folder / "model")
    return folder / "model"
