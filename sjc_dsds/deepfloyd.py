"""DeepFloydDenoiser: DeepFloyd IF stage I (64 px pixel space, T5 text) as a VE denoiser.

IF's UNet predicts 6 channels: epsilon (or v) in the first 3 and a learned variance, which SJC
ignores. The sigma ladder, snap and input scaling follow `score.py` exactly as for SD; there is
no VAE, so a render is the image itself in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from sjc_dsds.errors import ConfigError, MissingModelError
from sjc_dsds.families import DEEPFLOYD_MODEL_ID, DeepFloydConfig
from sjc_dsds.pretrained import is_local, load_pretrained
from sjc_dsds.score import (
    Conditioning,
    ScoreModel,
    denoised_from_eps,
    guidance_combine,
    guided_batch,
    sigmas_from_alphas_cumprod,
    vp_input_scale,
)
from sjc_dsds.stable_diffusion import uses_channels_last

DEFAULT_MODEL_ID = DEEPFLOYD_MODEL_ID
MODEL_FLAG = "--deepfloyd.model_id"
WHAT = "DeepFloyd IF stage I model"
GATED_NOTE = (
    "the model is gated behind a licence on the Hugging Face Hub: accept it on the model's "
    "page, then log in with `hf auth login` before downloading"
)
# Configs, the T5 tokenizer and the fp16 UNet and T5 weights (the repository also holds fp32,
# .bin and safety-checker copies, tens of gigabytes more).
DOWNLOAD_ARGS = (
    '--include "*.json" --include "tokenizer/*" --include "unet/*.fp16.safetensors" '
    '--include "text_encoder/*.fp16*.safetensors"'
)
PREDICTION_TYPES = ("epsilon", "v_prediction")
# IF's text encoder was trained on 77 tokens (diffusers' IFPipeline.encode_prompt).
MAX_TEXT_TOKENS = 77


class DeepFloydParts(NamedTuple):
    """The diffusers/transformers components of an IF stage-I pipeline the denoiser uses."""

    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any


def weight_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Weight dtype for `--deepfloyd.precision` on `device` (CPU always fp32)."""
    if device.type == "cpu":
        return torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def weights_variant(model_id: str) -> str | None:
    """Weight-file variant: "fp16" on the hub (the files worth fetching) or in fp16-only folders."""
    if not is_local(model_id):
        return "fp16"
    unet = Path(model_id).expanduser() / "unet"
    has_fp16 = any(unet.glob("*.fp16.safetensors"))
    return (
        "fp16" if has_fp16 and not (unet / "diffusion_pytorch_model.safetensors").exists() else None
    )


def load_deepfloyd(
    model_id: str, dtype: torch.dtype, revision: str | None = None
) -> DeepFloydParts:
    """Load IF stage I's UNet, T5 encoder, T5 tokenizer and DDPM scheduler (hub id or folder).

    Missing or gated weights raise MissingModelError naming the download and `--deepfloyd.model_id`.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, T5EncoderModel

    common = dict(what=WHAT, flag=MODEL_FLAG, revision=revision, download_args=DOWNLOAD_ARGS)

    def load(component: Any, subfolder: str, **kwargs: Any) -> Any:
        try:
            return load_pretrained(
                component.from_pretrained, model_id, subfolder=subfolder, **common, **kwargs
            )
        except MissingModelError as error:
            if is_local(model_id):
                raise
            raise MissingModelError(f"{error}; {GATED_NOTE}") from None

    # The scheduler config is the smallest file: a missing model fails here, in milliseconds.
    scheduler = load(DDPMScheduler, "scheduler")
    try:
        tokenizer = load(AutoTokenizer, "tokenizer")
    except ImportError as error:  # spiece.model without tokenizer.json needs sentencepiece
        raise ConfigError(
            f"{MODEL_FLAG} {model_id}: its T5 tokenizer needs an extra package "
            f"({str(error).strip().splitlines()[0][:120]}); pip install 'sjc-dsds[deepfloyd]'"
        ) from None
    variant = weights_variant(model_id)
    text_encoder = load(T5EncoderModel, "text_encoder", dtype=dtype, variant=variant)
    unet = load(UNet2DConditionModel, "unet", torch_dtype=dtype, variant=variant)
    return DeepFloydParts(unet, text_encoder, tokenizer, scheduler)


def check_stage_one(parts: DeepFloydParts, model_id: str) -> str:
    """The scheduler's prediction type, after checking that this is an IF stage-I pipeline."""
    prediction_type = parts.scheduler.config.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"{MODEL_FLAG} {model_id}: prediction_type {prediction_type!r} is not supported "
            f"(allowed: {', '.join(PREDICTION_TYPES)})"
        )
    channels = (parts.unet.config.in_channels, parts.unet.config.out_channels)
    if channels[0] != 3 or channels[1] not in (3, 6):
        raise ConfigError(
            f"{MODEL_FLAG} {model_id}: not an IF stage-I UNet (in/out channels {channels}, "
            "expected 3 in and 6 out: RGB epsilon plus learned variance)"
        )
    return prediction_type


class DeepFloydDenoiser(ScoreModel):
    """IF stage I as a VE denoiser D(x, sigma) on its 1000-level DDPM sigma ladder, in pixels.

    Same arithmetic as StableDiffusionDenoiser (and diffusers' `pred_original_sample`) on the
    first 3 output channels; the negative prompt lives in the model (`negative_prompt`).
    """

    def __init__(
        self,
        parts: DeepFloydParts,
        guidance_scale: float,
        device: torch.device,
        negative_prompt: str = "",
        model_id: str = "DeepFloyd IF",
    ) -> None:
        super().__init__()
        self.prediction_type = check_stage_one(parts, model_id)
        for module in (parts.unet, parts.text_encoder):
            module.to(device).eval().requires_grad_(False)
        if uses_channels_last(device):
            parts.unet.to(memory_format=torch.channels_last)
        # T5's tokenizer allows 512 tokens but IF reads 77: prompt fitting must see that limit.
        parts.tokenizer.model_max_length = MAX_TEXT_TOKENS
        self.unet, self.text_encoder, self.tokenizer = (
            parts.unet,
            parts.text_encoder,
            parts.tokenizer,
        )
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = negative_prompt
        self.device = device
        self.dtype = parts.unet.dtype
        self.sigmas = sigmas_from_alphas_cumprod(parts.scheduler.alphas_cumprod)  # [1000] float64
        side = parts.unet.config.sample_size
        self.data_shape = (3, side, side)
        self._timesteps = torch.arange(len(self.sigmas), device=device)
        self._alphas_cumprod = parts.scheduler.alphas_cumprod.to(device, torch.float32)

    @classmethod
    def from_config(cls, cfg: DeepFloydConfig, device: torch.device) -> DeepFloydDenoiser:
        """Load the model named by `--deepfloyd.model_id` onto `device`."""
        dtype = weight_dtype(cfg.precision, device)
        parts = load_deepfloyd(cfg.model_id, dtype, revision=cfg.revision)
        return cls(parts, cfg.scale, device, cfg.negative_prompt, model_id=cfg.model_id)

    def condition(self, prompt: str, negative_prompt: str | None = None) -> Conditioning:
        """Encode `prompt` once; the guidance branch is `negative_prompt`, else the model's own."""
        chosen = self.negative_prompt if negative_prompt is None else negative_prompt
        return super().condition(prompt, chosen)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """T5 embeddings [n_prompts, 77, width], as IFPipeline.encode_prompt without clean_caption.

        Texts are lower-cased and stripped, padded to 77 tokens, encoded with the attention mask.
        """
        texts = [text.lower().strip() for text in prompts]
        tokens = self.tokenizer(
            texts,
            padding="max_length",
            max_length=MAX_TEXT_TOKENS,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        embeddings = self.text_encoder(
            tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device)
        )[0]
        return embeddings.to(self.dtype)

    @torch.no_grad()
    def denoise(
        self, noised: torch.Tensor, sigma: float | torch.Tensor, cond: Conditioning
    ) -> torch.Tensor:
        """Guided clean image D(z, sigma) [b, 3, h, w] of VE pixels z = y + sigma n.

        docs/method.md A.2.

        Snaps sigma, feeds z / sqrt(1 + sigma^2) at index t, keeps the first 3 output channels,
        combines [uncond, cond] as eps_u + s (eps_c - eps_u), turns v into eps; z - sigma eps.
        """
        if noised.ndim != 4 or noised.shape[1] != 3:
            raise ValueError(f"noised must be [b, 3, h, w], got {list(noised.shape)}")
        t, sigma = self.snap(sigma)
        noised_vp = noised * vp_input_scale(sigma)
        guided = cond.uncond is not None and self.guidance_scale != 1.0
        model_input, text = guided_batch(noised_vp.to(self.dtype), cond, guided)
        output = self.unet(
            model_input, self._timesteps[t], encoder_hidden_states=text, return_dict=False
        )[0]
        output = output[:, :3].to(noised.dtype)  # channels 3..5: learned variance, unused
        if guided:
            output = guidance_combine(*output.chunk(2), self.guidance_scale)
        if self.prediction_type == "v_prediction":
            # x0 = sqrt(abar) x_t - sqrt(1 - abar) v: the D of z - sigma eps_from_v(...) without its
            # float32 cancellation at IF's large sigmas (up to 2e4 on the cosine ladder).
            abar = self._alphas_cumprod[t]
            return abar.sqrt() * noised_vp - (1 - abar).sqrt() * output
        return denoised_from_eps(noised, output, sigma)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """RGB images [b, 3, h, w] in [0, 1] from pixels in [-1, 1] (no VAE: clamp and rescale)."""
        return (x.float().clamp(-1, 1) + 1) / 2


def build_score_model(cfg: Any, device: torch.device) -> DeepFloydDenoiser:
    """The `--family deepfloyd` builder of `families.FAMILIES`: the model of `cfg.deepfloyd`."""
    return DeepFloydDenoiser.from_config(cfg.deepfloyd, device)
