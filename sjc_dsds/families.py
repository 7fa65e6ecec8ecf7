"""Score-model families: each family's flag group and what it implies, in one registry.

A family brings its config group (`--<family>.*`), the field it implies (channels, colour
activation, background), a score-model builder and optionally a view probe for prompt
debiasing and extra evaluation metrics. The rest of the package asks `FAMILIES[name]` instead
of branching on the name. Builders are "module:attribute" paths imported only when used, so
this module (and `--help`) imports no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from pydantic import Field, model_validator

from sjc_dsds.config_groups import Group


class SDConfig(Group):
    """Stable Diffusion score model (`--sd.*`)."""

    variant: Literal["v1", "v2", "v2_highres"] = Field(
        "v1", description="SD 1.x (epsilon), SD 2.x base 512 (epsilon) or 2.x 768 (v-prediction)."
    )
    v2_highres: bool = Field(
        False, description="SJC spelling of --sd.variant v2_highres (only with variant v2)."
    )
    prompt: str = Field(
        "A high quality photo of a delicious burger", description="Text prompt of the object."
    )
    negative_prompt: str = Field(
        "", description="Text of the unconditional branch of guidance ('' as in SJC)."
    )
    scale: float = Field(
        100.0,
        ge=0,
        le=1000,
        description="Classifier-free guidance scale s in eps_u + s (eps_c - eps_u).",
    )
    precision: Literal["autocast", "fp32", "fp16", "bf16"] = Field(
        "fp16",
        description=(
            "SD weights' dtype on CUDA (UNet, VAE, text encoder stored in fp16/bf16/fp32); "
            "autocast = fp32 weights under fp16 autocast (SJC's). CPU always runs fp32."
        ),
    )
    model_id: str | None = Field(
        None,
        json_schema_extra={"derived": True},
        description="Hub id, local folder or single .ckpt/.safetensors file; default per variant.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")

    @model_validator(mode="after")
    def _highres_is_a_v2_variant(self) -> SDConfig:
        if self.v2_highres and self.variant == "v1":
            raise ValueError("--sd.v2_highres True needs --sd.variant v2 (got v1)")
        return self

    @property
    def resolved_variant(self) -> str:
        """The variant after applying SJC's `v2_highres` switch."""
        return "v2_highres" if (self.variant == "v2" and self.v2_highres) else self.variant


class ToyConfig(Group):
    """Synthetic world with an exact score model (`--toy.*`, used with --family toy).

    The prior is `n_images` renders of the scene from SJC's training cameras, a `front_bias`
    share of them forced into the front quadrant; fixed constants are in sjc_dsds/toy/world.py.
    """

    scene: Literal["head", "animal", "cube"] = Field(
        "head", description="Ground-truth object whose renders form the image prior."
    )
    scene_seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="Procedural held-out scene from this seed (replaces --toy.scene).",
    )
    front_bias: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of prior images redrawn until their camera is in the front quadrant.",
    )
    n_images: int = Field(
        512, ge=1, le=100_000, description="Number of rendered images in the prior."
    )
    view_caption_frac: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of prior captions that name their view; the rest do not say it.",
    )
    distractor_frac: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of prior images showing another toy scene (the unconditional mix).",
    )
    guidance_scale: float = Field(
        3.0,
        ge=0,
        le=1000,
        description="Classifier-free guidance D_u + s (D_c - D_u) of the toy model.",
    )
    prompt: str | None = Field(None, description="Prompt; default is the scene's own caption.")

    def default_prompt(self) -> str:
        """The scene's own caption when --toy.prompt is not given."""
        return f"a {self.scene}"


DEEPFLOYD_MODEL_ID = "DeepFloyd/IF-I-XL-v1.0"


class DeepFloydConfig(Group):
    """DeepFloyd IF stage I score model (`--deepfloyd.*`, used with --family deepfloyd)."""

    prompt: str = Field(
        "A high quality photo of a delicious burger", description="Text prompt of the object."
    )
    negative_prompt: str = Field(
        "", description="Text of the unconditional branch of guidance ('' as in SJC)."
    )
    scale: float = Field(
        20.0,
        ge=0,
        le=1000,
        description="Guidance s in eps_u + s (eps_c - eps_u) (threestudio's IF setting: 20).",
    )
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp16", description="UNet/T5 weight dtype on CUDA; CPU always runs fp32."
    )
    model_id: str = Field(DEEPFLOYD_MODEL_ID, description="Hub id or local diffusers IF folder.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")


@dataclass(frozen=True)
class Family:
    """What one score-model family brings to a run.

    `group` is the family's flag group (`--<name>.*`). The field it implies is `channels`
    feature channels decoded as `model_type` with or without a learned background. Builders
    are "module:attribute" paths imported only when used, so the config stays torch-free:
    `score_model(cfg, device) -> ScoreModel`; optional `view_probe(cfg) -> ViewProbe` (instead
    of the masked LM for prompt debiasing); optional `extra_metrics(field, model, cfg, out_dir)
    -> dict` after the test orbit. `score_defaults` replace the D-SDS flag defaults when the
    user does not give them; `check(cfg)` adds cross-field rules (raise ValueError).
    """

    name: str
    group: type[Group]
    channels: int
    model_type: Literal["V_SD", "V_SJC"]
    blend_bg_texture: bool
    score_model: str
    view_probe: str | None = None
    extra_metrics: str | None = None
    score_defaults: Mapping[str, float] = field(default_factory=dict)
    check: Callable[[Any], None] | None = None
    # Config groups the score-model builder reads besides the family's own (sweeps share a
    # loaded model between runs that agree on them); the prompt is read per run, not at load.
    model_groups: tuple[str, ...] = ()

    def prompt(self, cfg: Any) -> str:
        """The user prompt of a run of this family."""
        group = getattr(cfg, self.name)
        default = getattr(group, "default_prompt", None)
        return group.prompt or (default() if default else "")

    def negative_prompt(self, cfg: Any) -> str:
        """Text of the unconditional branch of guidance ('' when the family has none)."""
        return getattr(getattr(cfg, self.name), "negative_prompt", "")

    @property
    def model_id_flag(self) -> str | None:
        """The flag naming the family's weights (changeable on --resume), if it has one."""
        return f"{self.name}.model_id" if "model_id" in self.group.model_fields else None


def _toy_needs_front_views(cfg: Any) -> None:
    """A front-biased prior redraws cameras until they are front: some must be possible."""
    if cfg.toy.front_bias > 0 and not cfg.pose.front_views_possible:
        raise ValueError(
            "--toy.front_bias > 0 needs front training views, and with these "
            "--pose.polar_max_deg / --pose.front_half_width_deg / "
            "--pose.overhead_min_elevation_deg no camera is labelled front; "
            "widen them or set --toy.front_bias 0"
        )


# The registry: adding a family is one module (its score model) plus one entry here.
FAMILIES: Mapping[str, Family] = MappingProxyType(
    {
        "sd": Family(
            "sd", SDConfig, 4, "V_SD", True, "sjc_dsds.stable_diffusion:build_score_model"
        ),
        # IF stage I: 64 px pixels, bounded RGB, SJC's pixel path keeps the learned background;
        # D-SDS's IF ramp grad_clip=[0, 0.5, 2.0] is 2.0 * (0.25 -> 1) over the run.
        "deepfloyd": Family(
            "deepfloyd",
            DeepFloydConfig,
            3,
            "V_SJC",
            True,
            "sjc_dsds.deepfloyd:build_score_model",
            score_defaults={"score_thres": 2.0, "score_thres_start": 0.25},
        ),
        "toy": Family(
            "toy",
            ToyConfig,
            3,
            "V_SJC",
            False,
            "sjc_dsds.toy:ToyScoreModel.from_config",
            view_probe="sjc_dsds.toy.prior:build_caption_probe",
            extra_metrics="sjc_dsds.toy:evaluation_metrics",
            check=_toy_needs_front_views,
            model_groups=("pose", "view", "vox"),  # the prior is rendered from them
        ),
    }
)


def load_object(path: str) -> Any:
    """The object named by "package.module:attribute.attribute" (imported now)."""
    module_name, _, attributes = path.partition(":")
    found: Any = importlib.import_module(module_name)
    for attribute in attributes.split("."):
        found = getattr(found, attribute)
    return found


def family_of(cfg: Any) -> Family:
    """The Family of a config (`cfg.family`)."""
    return FAMILIES[cfg.family]


def build_score_model(cfg: Any, device: Any) -> Any:
    """The score model of `cfg.family`, loaded onto `device`."""
    return load_object(family_of(cfg).score_model)(cfg, device)


def build_view_probe(cfg: Any) -> Any | None:
    """The family's own view probe for prompt debiasing, or None for the masked LM."""
    path = family_of(cfg).view_probe
    return load_object(path)(cfg) if path else None


def extra_metrics(field: Any, model: Any, cfg: Any, out_dir: Any) -> dict[str, Any]:
    """The family's metrics after the test orbit (e.g. ground truth for the toy world)."""
    path = family_of(cfg).extra_metrics
    return load_object(path)(field, model, cfg, out_dir) if path else {}
