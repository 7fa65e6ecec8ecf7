"""StableDiffusionDenoiser: SD's UNet, VAE and CLIP text encoder behind the VE denoiser interface.

Loads the components through `pretrained.py` (hub id, local diffusers folder or single checkpoint
file), turns the UNet's epsilon or v prediction into D(z, sigma) (docs/method.md A.2) and
decodes latents.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from pickle import UnpicklingError
from typing import Any, NamedTuple

import torch

from sjc_dsds.config import SDConfig
from sjc_dsds.errors import ConfigError, MissingModelError
from sjc_dsds.pretrained import is_single_file, load_pretrained, missing_model_message
from sjc_dsds.score import (
    Conditioning,
    ScoreModel,
    denoised_from_eps,
    eps_from_v,
    guidance_combine,
    guided_batch,
    sigmas_from_alphas_cumprod,
    vp_input_scale,
)

# docs/method.md decision 6: the SD 2.0 repositories match SJC's 512-base-ema.ckpt and
# 768-v-ema.ckpt.
DEFAULT_MODEL_IDS: dict[str, str] = {
    "v1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "v2": "stabilityai/stable-diffusion-2-base",
    "v2_highres": "stabilityai/stable-diffusion-2",
}
MODEL_FLAG = "--sd.model_id"
WHAT = "Stable Diffusion model"
# Only what the denoiser loads: configs, tokenizer files and the fp32 safetensors weights (the
# repositories also hold multi-gigabyte .ckpt, .bin, fp16 and non-EMA copies).
DOWNLOAD_ARGS = (
    '--include "*.json" --include "*.txt" --include "*/diffusion_pytorch_model.safetensors" '
    '--include "text_encoder/model.safetensors"'
)
CONFIG_DOWNLOAD_ARGS = '--include "*.json" --include "*.txt"'
PREDICTION_TYPES = ("epsilon", "v_prediction")


class StableDiffusionParts(NamedTuple):
    """The diffusers/transformers components the denoiser uses."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any


def precision_dtypes(
    precision: str, device: torch.device
) -> tuple[torch.dtype, torch.dtype | None]:
    """(weight dtype, autocast dtype or None) for `--sd.precision` on `device`.

    CPU always runs fp32; `autocast` keeps fp32 weights under fp16 autocast on CUDA (SJC's mode);
    fp16 and bf16 cast the weights themselves.
    """
    if device.type == "cpu":
        return torch.float32, None
    if precision == "autocast":
        return torch.float32, (torch.float16 if device.type == "cuda" else None)
    weights = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return weights, None


def uses_channels_last(device: torch.device) -> bool:
    """Whether the UNet's convolutions run channels-last: on CUDA, where cuDNN's NHWC kernels
    (tensor cores in fp16/bf16) are faster; CPU keeps NCHW."""
    return device.type == "cuda"


def load_stable_diffusion(
    model_id: str,
    dtype: torch.dtype,
    revision: str | None = None,
    config_id: str = DEFAULT_MODEL_IDS["v1"],
) -> StableDiffusionParts:
    """Load UNet, VAE, text encoder, tokenizer and a DDPM scheduler from a folder, hub id or file.

    A single `.ckpt`/`.safetensors` file goes through diffusers' single-file loader, with the
    component configs of `config_id` (a hub id, its small files cached, or a local diffusers
    folder). Missing weights or configs raise MissingModelError naming `--sd.model_id`.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if is_single_file(model_id):
        return _load_single_file(model_id, dtype, config_id)
    common = dict(what=WHAT, flag=MODEL_FLAG, revision=revision, download_args=DOWNLOAD_ARGS)

    def load(component: Any, subfolder: str, **kwargs: Any) -> Any:
        return load_pretrained(
            component.from_pretrained, model_id, subfolder=subfolder, **common, **kwargs
        )

    # The scheduler config is the smallest file: a missing model fails here, in milliseconds.
    scheduler = load(DDPMScheduler, "scheduler")
    tokenizer = load(CLIPTokenizer, "tokenizer")
    text_encoder = load(CLIPTextModel, "text_encoder", dtype=dtype)
    unet = load(UNet2DConditionModel, "unet", torch_dtype=dtype)
    vae = load(AutoencoderKL, "vae", torch_dtype=dtype)
    return StableDiffusionParts(unet, vae, text_encoder, tokenizer, scheduler)


def _load_single_file(model_id: str, dtype: torch.dtype, config_id: str) -> StableDiffusionParts:
    """diffusers' single-file loader, fed a local folder of `config_id`'s configs (no weights)."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError
    from huggingface_hub import snapshot_download
    from safetensors import SafetensorError

    if not Path(model_id).expanduser().is_file():
        raise MissingModelError(missing_model_message(model_id, WHAT, MODEL_FLAG, "no such file"))
    config_folder = config_id
    if not Path(config_id).is_dir():
        # Fetch (or find in the cache) only the JSON/text files, so the loader never goes online.
        config_folder = load_pretrained(
            snapshot_download,
            config_id,
            what="Config repository for single-file checkpoints",
            flag=MODEL_FLAG,
            download_args=CONFIG_DOWNLOAD_ARGS,
            allow_patterns=["*.json", "*.txt"],
        )
    try:
        pipeline = load_pretrained(
            StableDiffusionPipeline.from_single_file,
            model_id,
            what=WHAT,
            flag=MODEL_FLAG,
            config=config_folder,
            torch_dtype=dtype,
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
        )
    except (
        SingleFileComponentError,
        SafetensorError,
        UnpicklingError,
        KeyError,
        ValueError,
    ) as error:
        # The file exists but is not an SD checkpoint diffusers can convert with these configs
        # (or a .ckpt holds non-tensor objects, which torch.load(weights_only=True) refuses).
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else repr(error)
        raise ConfigError(
            f"{MODEL_FLAG} {model_id}: not a Stable Diffusion checkpoint that matches the configs "
            f"of {config_id} ({reason})"
        ) from None
    scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    return StableDiffusionParts(
        pipeline.unet, pipeline.vae, pipeline.text_encoder, pipeline.tokenizer, scheduler
    )


class StableDiffusionDenoiser(ScoreModel):
    """Stable Diffusion as a VE denoiser D(z, sigma) on its 1000-level DDPM sigma ladder.

    Equivalent to diffusers' own `pred_original_sample` for the same UNet output (the tests'
    oracle); guidance is SJC's eps_u + s (eps_c - eps_u) with both halves in one UNet call.
    """

    def __init__(
        self,
        parts: StableDiffusionParts,
        guidance_scale: float,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        model_id: str = "Stable Diffusion",
    ) -> None:
        super().__init__()
        from diffusers.models.attention_processor import AttnProcessor2_0

        prediction_type = parts.scheduler.config.prediction_type
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                f"{MODEL_FLAG} {model_id}: prediction_type {prediction_type!r} is not supported "
                f"(allowed: {', '.join(PREDICTION_TYPES)})"
            )
        for module in (parts.unet, parts.vae, parts.text_encoder):
            module.to(device).eval().requires_grad_(False)
        if uses_channels_last(device):
            parts.unet.to(memory_format=torch.channels_last)
        # PyTorch's scaled-dot-product attention for every attention layer.
        parts.unet.set_attn_processor(AttnProcessor2_0())
        parts.vae.set_attn_processor(AttnProcessor2_0())
        self.unet, self.vae = parts.unet, parts.vae
        self.text_encoder, self.tokenizer = parts.text_encoder, parts.tokenizer
        self.prediction_type = prediction_type
        self.guidance_scale = float(guidance_scale)
        self.device = device
        self.dtype = parts.unet.dtype
        self.autocast_dtype = autocast_dtype
        self.latent_scale = float(parts.vae.config.scaling_factor)
        self.sigmas = sigmas_from_alphas_cumprod(parts.scheduler.alphas_cumprod)  # [1000] float64
        side = parts.unet.config.sample_size
        self.data_shape = (parts.unet.config.in_channels, side, side)
        # Per-index tables on the device, so that a call indexes instead of building tensors.
        self._timesteps = torch.arange(len(self.sigmas), device=device)
        self._alphas_cumprod = parts.scheduler.alphas_cumprod.to(device, torch.float32)

    @classmethod
    def from_config(cls, sd: SDConfig, device: torch.device) -> StableDiffusionDenoiser:
        """Load the model named by `--sd.model_id` (default per `--sd.variant`) onto `device`."""
        variant = sd.resolved_variant
        model_id = sd.model_id or DEFAULT_MODEL_IDS[variant]
        weights, autocast = precision_dtypes(sd.precision, device)
        parts = load_stable_diffusion(
            model_id, weights, revision=sd.revision, config_id=DEFAULT_MODEL_IDS[variant]
        )
        model = cls(parts, sd.scale, device, autocast_dtype=autocast, model_id=model_id)
        model.negative_prompt = sd.negative_prompt
        return model

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text embeddings [n_prompts, 77, text_width], as StableDiffusionPipeline does."""
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
        mask = tokens.attention_mask.to(self.device) if use_mask else None
        with self._autocast():
            embeddings = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]
        return embeddings.to(self.dtype)

    @torch.no_grad()
    def denoise(
        self, noised: torch.Tensor, sigma: float | torch.Tensor, cond: Conditioning
    ) -> torch.Tensor:
        """Guided clean estimate D(z, sigma) [b, 4, h, w] of VE latents z = y + sigma n.

        docs/method.md A.2.

        Snaps sigma to the ladder, feeds z / sqrt(1 + sigma^2) at DDPM index t to the UNet, combines
        [uncond, cond] as eps_u + s (eps_c - eps_u), converts v to eps, returns z - sigma eps.
        """
        if noised.ndim != 4 or noised.shape[1] != self.data_shape[0]:
            raise ValueError(
                f"noised must be [b, {self.data_shape[0]}, h, w], got {list(noised.shape)}"
            )
        t, sigma = self.snap(sigma)
        noised_vp = noised * vp_input_scale(sigma)
        guided = cond.uncond is not None and self.guidance_scale != 1.0
        model_input, text = guided_batch(noised_vp.to(self.dtype), cond, guided)
        with self._autocast():
            output = self.unet(
                model_input, self._timesteps[t], encoder_hidden_states=text, return_dict=False
            )[0]
        output = output.to(noised.dtype)
        if guided:
            output = guidance_combine(*output.chunk(2), self.guidance_scale)
        if self.prediction_type == "v_prediction":
            # v -> eps is affine in v at a fixed input, so converting the guided v is exact.
            output = eps_from_v(noised_vp, output, self._alphas_cumprod[t])
        return denoised_from_eps(noised, output, sigma)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """RGB images [b, 3, f h, f w] in [0, 1] from scaled latents [b, 4, h, w] (f = 8 for SD).

        Divides by the VAE's scaling factor (0.18215 for SD) first (docs/method.md A.2).
        """
        with self._autocast():
            image = self.vae.decode((x / self.latent_scale).to(self.dtype), return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)


def build_score_model(cfg: Any, device: torch.device) -> StableDiffusionDenoiser:
    """The `--family sd` builder of `families.FAMILIES`: the model of `cfg.sd` on `device`."""
    return StableDiffusionDenoiser.from_config(cfg.sd, device)
