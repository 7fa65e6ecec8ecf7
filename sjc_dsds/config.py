"""Every flag group as a pydantic model, cross-field rules, YAML dump/load (imports no torch)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sjc_dsds.errors import ConfigError

ViewLabel = Literal["front", "side", "back", "overhead"]
VIEW_LABELS: tuple[str, ...] = ("front", "side", "back", "overhead")

# SJC's overhead rule is v < 30 deg with cos(polar) = 1 - 2 v / pi, i.e. elevation > arcsin(2/3).
SJC_OVERHEAD_ELEVATION_DEG = math.degrees(math.asin(2.0 / 3.0))
# SJC clips its polar parameter v to [0.01, pi - 0.01] rad so the eye never sits on the y axis.
POLAR_PARAMETER_CLIP_RAD = 0.01
# Largest voxel-grid side accepted (1024^3 x 4 channels is already 16 GiB of float32).
MAX_GRID_SIDE = 1024


class Group(BaseModel):
    """Base for every flag group: unknown keys and non-finite numbers are errors; re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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


class VoxConfig(Group):
    """Voxel radiance field and ray marching (`--vox.*`)."""

    model_type: Literal["V_SD", "V_SJC"] | None = Field(
        None,
        description="V_SD: identity features (latents); V_SJC: 2 sigmoid - 1 colours; "
        "default follows --family.",
    )
    bbox_len: float = Field(
        1.0, gt=0, le=100, description="Half side of the scene box [-len, len]^3."
    )
    grid_size: tuple[int, int, int] = Field(
        (100, 100, 100),
        description="Voxels per side: one integer for a cube, or x,y,z.",
    )
    step_ratio: float = Field(
        0.5, gt=0, le=10, description="Ray-march step as a fraction of one voxel."
    )
    density_shift: float = Field(
        -1.0, ge=-100, le=100, description="Added to the raw density before softplus."
    )
    ray_march_weight_thres: float = Field(
        1e-4, ge=0, le=1, description="Skip feature lookups for samples with weight <= this."
    )
    c: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Feature channels; default follows --family (4 for sd, 3 for toy).",
    )
    blend_bg_texture: bool | None = Field(
        None,
        description="Blend a learned background texture; default follows --family (sd: True, "
        "toy: False, its prior has a fixed background).",
    )
    bg_texture_hw: int = Field(4, ge=1, le=512, description="Side of the background texture.")
    alpha_mask: bool = Field(
        False, description="Prune empty space with a max-pooled alpha mask (off in SJC)."
    )
    alpha_mask_every: int = Field(
        100,
        ge=1,
        le=10_000_000,
        description="Rebuild the alpha mask every this many steps (with alpha_mask).",
    )
    alpha_mask_thres: float = Field(
        0.08, ge=0, le=1, description="Voxel alpha below which space counts as empty."
    )

    @field_validator("grid_size", mode="before")
    @classmethod
    def _cube_from_int(cls, value: object) -> object:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            text = str(value)
            if "," in text:
                return tuple(part.strip() for part in text.split(","))
            return (value, value, value)
        return value

    @field_validator("grid_size")
    @classmethod
    def _grid_at_least_two(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(value) < 2 or max(value) > MAX_GRID_SIDE:
            raise ValueError(
                f"must have every side in 2..{MAX_GRID_SIDE} (got {','.join(map(str, value))})"
            )
        return value


class PoseConfig(Group):
    """Training cameras, view labels and the test spiral (`--pose.*`)."""

    rend_hw: int = Field(64, ge=2, le=4096, description="Side of the rendered image in pixels.")
    FoV: float = Field(60.0, gt=0, lt=180, description="Test-spiral horizontal field of view.")
    R: float = Field(1.5, gt=0, le=100, description="Camera distance from the origin.")
    train_fov_min_deg: float = Field(
        40.0, gt=0, lt=180, description="Smallest training field of view."
    )
    train_fov_max_deg: float = Field(
        70.0, gt=0, lt=180, description="Largest training field of view."
    )
    polar_max_deg: float = Field(
        100.0, gt=0, le=180, description="SJC's polar parameter v ~ U(0, this); 100 in SJC."
    )
    front_half_width_deg: float = Field(
        45.0, ge=0, le=180, description="Azimuths within this of 0 deg are labelled front."
    )
    back_half_width_deg: float = Field(
        45.0, ge=0, le=180, description="Azimuths within this of 180 deg are labelled back."
    )
    overhead_min_elevation_deg: float = Field(
        SJC_OVERHEAD_ELEVATION_DEG,
        ge=-90,
        le=90,
        description="Elevations above this are labelled overhead (SJC: arcsin(2/3) = 41.81).",
    )
    n_test_frames: int = Field(100, ge=1, le=10_000, description="Frames of the test spiral.")
    test_rounds: int = Field(3, ge=1, le=100, description="Turns of the test spiral.")

    @property
    def lowest_train_elevation_deg(self) -> float:
        """Lowest training elevation: SJC's polar parameter at its largest (clipped) value."""
        clip = POLAR_PARAMETER_CLIP_RAD
        largest = min(max(math.radians(self.polar_max_deg), clip), math.pi - clip)
        return 90.0 - math.degrees(math.acos(1.0 - 2.0 * largest / math.pi))

    @property
    def front_views_possible(self) -> bool:
        """Whether some training camera is labelled front (front azimuth, not overhead)."""
        low_enough = self.lowest_train_elevation_deg <= self.overhead_min_elevation_deg
        return self.front_half_width_deg > 0 and low_enough

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> PoseConfig:
        if self.train_fov_min_deg > self.train_fov_max_deg:
            raise ValueError(
                "--pose.train_fov_min_deg must be <= --pose.train_fov_max_deg "
                f"(got {self.train_fov_min_deg} > {self.train_fov_max_deg})"
            )
        if self.front_half_width_deg + self.back_half_width_deg > 180:
            raise ValueError(
                "--pose.front_half_width_deg + --pose.back_half_width_deg must be <= 180"
            )
        return self


class ViewPromptConfig(Group):
    """Text of each view's prompt (`--view.*`)."""

    style: Literal["prefix", "suffix"] = Field(
        "prefix", description="prefix: '<front> view of {prompt}' (SJC); suffix: '{prompt}, ...'."
    )
    front: str = Field("front", description="View word of the front view.")
    side: str = Field("side", description="View word of the side views.")
    back: str = Field("backside", description="View word of the back view (SJC: backside).")
    overhead: str = Field("overhead", description="View word of the overhead view.")
    prompt_front: str | None = Field(None, description="Manual full prompt for front views.")
    prompt_side: str | None = Field(None, description="Manual full prompt for side views.")
    prompt_back: str | None = Field(None, description="Manual full prompt for back views.")
    prompt_overhead: str | None = Field(None, description="Manual full prompt for overhead views.")


class PromptDebiasConfig(Group):
    """D-SDS prompt debiasing with a masked language model (`--lm.*`)."""

    model_id: str = Field("bert-base-uncased", description="Masked LM: hub id or local folder.")
    revision: str | None = Field(None, description="Hub revision of the masked LM.")
    template: str = Field(
        "This image is depicting a [MASK] view of {prompt}",
        description="Probe sentence; [MASK] is replaced by the LM's mask token.",
    )
    view_words: tuple[str, str, str, str] = Field(
        ("front", "side", "back", "overhead"),
        description="LM words for front,side,back,overhead (each a single token).",
    )
    threshold: float = Field(
        0.95, gt=0, le=100, description="Drop a word for a view when its ratio is below this."
    )
    mix: float = Field(
        0.5, ge=0, le=1, description="Weight of P(view|prompt without word) in the ratio's mean."
    )
    candidate_ids: tuple[int, ...] | None = Field(
        None, description="0-based word indices that may be dropped (comma list); default all."
    )


# --- Evaluation, metrics and logging groups (issue 12): the flags --resume/--eval_only accept. ---
MeshFormat = Literal["ply", "obj", "glb"]
MetricName = Literal["a_lpips", "clip"]
DEFAULT_CLIP_DISTRACTORS: tuple[str, ...] = (
    "a photo of a dog",
    "a photo of a car",
    "a photo of a chair",
    "a photo of a tree",
    "a photo of a house",
    "a photo of a cup of coffee",
    "a photo of a bicycle",
    "a photo of a hamburger",
)


class EvalConfig(Group):
    """High-resolution final render, readable snapshots and mesh export (`--eval.*`)."""

    highres: bool = Field(
        False, description="Also render SJC's high-resolution final spiral (after a run or eval)."
    )
    highres_factor: int = Field(
        4, ge=1, le=16, description="Sub-pixel rays per image side of the high-resolution render."
    )
    highres_bottleneck: int = Field(
        128,
        ge=4,
        le=1024,
        description="Side the sub-pixel render is antialiased down to before the decoder "
        "(SD: latent side, x8 pixels).",
    )
    highres_n_frames: int = Field(
        200, ge=1, le=10_000, description="Frames of the high-resolution spiral (SJC: 200)."
    )
    highres_skip_frames: int = Field(
        60,
        ge=0,
        le=10_000,
        description="Leading overhead frames of that spiral left out (SJC: 60).",
    )
    highres_chunk_rays: int = Field(
        65_536, ge=256, le=2**26, description="Rays rendered at once (bounds peak memory)."
    )
    snapshot_side: int = Field(
        256, ge=16, le=4096, description="Snapshots are upscaled (nearest) to at least this side."
    )
    mesh_format: MeshFormat = Field("ply", description="File format of RUN/export/mesh.*.")
    mesh_resolution: int | None = Field(
        None, ge=8, le=1024, description="Marching-cubes cells per side; default the grid's."
    )
    mesh_threshold: float = Field(
        25.0, gt=0, le=1e9, description="Density level of the surface (threestudio's default 25)."
    )
    mesh_components: int = Field(
        1, ge=0, le=100_000, description="Keep this many largest connected pieces (0 keeps all)."
    )
    mesh_smooth_iterations: int = Field(
        0, ge=0, le=1000, description="Taubin smoothing iterations (0: none)."
    )
    mesh_color_views: int = Field(
        8, ge=1, le=256, description="Views decoded and projected for colours of latent fields."
    )

    @model_validator(mode="after")
    def _skip_fewer_than_frames(self) -> EvalConfig:
        if self.highres_skip_frames >= self.highres_n_frames:
            raise ValueError(
                "--eval.highres_skip_frames must be < --eval.highres_n_frames "
                f"(got {self.highres_skip_frames} >= {self.highres_n_frames})"
            )
        return self


class MetricsConfig(Group):
    """The D-SDS paper's metrics on the test orbit (`--metrics.*`)."""

    compute: tuple[MetricName, ...] = Field(
        (), description="Metrics computed after a run or --eval_only: a_lpips,clip (comma list)."
    )
    lpips_trunk: str | None = Field(
        None,
        description="torchvision VGG16 state dict for LPIPS; default "
        "$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth.",
    )
    clip_model_id: str = Field(
        "openai/clip-vit-base-patch32", description="CLIP for CLIP score: hub id or local folder."
    )
    clip_revision: str | None = Field(None, description="Hub revision of the CLIP model.")
    clip_distractors: tuple[str, ...] = Field(
        DEFAULT_CLIP_DISTRACTORS,
        description="Prompts the user prompt is ranked against for CLIP R-precision.",
    )


class LogConfig(Group):
    """Optional logs next to metrics.jsonl (`--log.*`)."""

    tensorboard: bool = Field(
        False, description="Also write TensorBoard events to RUN/tensorboard (tensorboard extra)."
    )


class SJCConfig(Group):
    """Everything one run needs; saved as <run_dir>/config.yaml."""

    family: Literal["sd", "toy"] = Field("sd", description="Score model family.")
    lr: float = Field(0.05, gt=0, le=10, description="Adamax learning rate of the voxel grids.")
    bg_lr: float = Field(1e-4, ge=0, le=10, description="Adamax learning rate of the background.")
    n_steps: int = Field(10_000, gt=0, le=10_000_000, description="Optimisation steps.")
    emptiness_scale: float = Field(10.0, ge=0, le=1e6, description="k in log(1 + k w).")
    emptiness_weight: float = Field(
        10_000.0, ge=0, le=1e9, description="Weight of the emptiness loss."
    )
    emptiness_step: float = Field(
        0.5, ge=0, le=1, description="Fraction of n_steps after which the multiplier applies."
    )
    emptiness_multiplier: float = Field(
        20.0, ge=0, le=1e6, description="Emptiness weight multiplier from emptiness_step on."
    )
    depth_weight: float = Field(
        0.0,
        ge=0,
        le=1e6,
        description="Centre-depth loss weight; intended sign (centre nearer), fixing sjc#21.",
    )
    var_red: bool = Field(True, description="Score (D - y)/sigma (True) or (D - z)/sigma (False).")
    score_thres: float = Field(
        8.0,
        ge=-1e6,
        le=1e6,
        description="D-SDS elementwise score clip; <= 0 turns score debiasing off.",
    )
    score_dynamic: bool = Field(True, description="Grow the score threshold linearly over the run.")
    score_thres_start: float = Field(
        0.25, ge=0, le=1, description="Fraction of score_thres at step 0 when dynamic."
    )
    prompt_debias: bool = Field(False, description="D-SDS prompt debiasing with a masked LM.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of every random stream of the run.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    out_dir: str | None = Field(
        None, description="Run directory; default outputs/<prompt-slug>/<time>-seed<S>-<random>."
    )
    save_every: int | None = Field(
        None, ge=1, le=10**9, description="Checkpoint cadence in steps; default n_steps / 10."
    )
    vis_every: int | None = Field(
        None,
        ge=1,
        le=10**9,
        description="Snapshot cadence in steps; default n_steps / 100 (SJC).",
    )
    log_every: int = Field(
        1, ge=1, le=10**9, description="Write metrics.jsonl every this many steps."
    )
    keep_checkpoints: int = Field(
        2,
        ge=1,
        le=100_000,
        description="Keep the newest this many checkpoints (and the final one); older are pruned.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads of torch; default picks one that holds up on a busy small CPU.",
    )
    sd: SDConfig = Field(default_factory=SDConfig)
    toy: ToyConfig = Field(default_factory=ToyConfig)
    vox: VoxConfig = Field(default_factory=VoxConfig)
    pose: PoseConfig = Field(default_factory=PoseConfig)
    view: ViewPromptConfig = Field(default_factory=ViewPromptConfig)
    lm: PromptDebiasConfig = Field(default_factory=PromptDebiasConfig)
    export_mesh: bool = Field(
        False, description="Write RUN/export/mesh.* (marching cubes) at the end of the run."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", value):
            return value
        raise ValueError(f"must be one of auto, cpu, cuda, cuda:N, mps (got {value!r})")

    @model_validator(mode="after")
    def _field_follows_family(self) -> SJCConfig:
        expected_c = 4 if self.family == "sd" else 3
        expected_type = "V_SD" if self.family == "sd" else "V_SJC"
        if self.vox.c is None:
            self.vox.c = expected_c
        elif self.vox.c != expected_c:
            raise ValueError(
                f"--vox.c must be {expected_c} with --family {self.family} (got {self.vox.c})"
            )
        if self.vox.model_type is None:
            self.vox.model_type = expected_type
        if self.vox.blend_bg_texture is None:
            self.vox.blend_bg_texture = self.family == "sd"
        if self.family == "toy" and self.toy.front_bias > 0:
            if not self.pose.front_views_possible:
                raise ValueError(
                    "--toy.front_bias > 0 needs front training views, and with these "
                    "--pose.polar_max_deg / --pose.front_half_width_deg / "
                    "--pose.overhead_min_elevation_deg no camera is labelled front; "
                    "widen them or set --toy.front_bias 0"
                )
        manual = [self.view.prompt_front, self.view.prompt_side, self.view.prompt_back]
        if self.prompt_debias and any(p is not None for p in manual + [self.view.prompt_overhead]):
            raise ValueError(
                "--prompt_debias True cannot be combined with manual --view.prompt_* prompts"
            )
        return self

    @property
    def prompt(self) -> str:
        """The user prompt of the active family."""
        if self.family == "toy":
            return self.toy.prompt or f"a {self.toy.scene}"
        return self.sd.prompt

    @property
    def vis_interval(self) -> int:
        """Snapshot cadence in steps (SJC: 1 % of the run)."""
        return self.vis_every or max(1, self.n_steps // 100)

    @property
    def save_interval(self) -> int:
        """Checkpoint cadence in steps."""
        return self.save_every or max(1, self.n_steps // 10)


def dump_config(cfg: SJCConfig) -> str:
    """YAML text of a config; `load_config_text(dump_config(cfg)) == cfg`."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def load_config_text(text: str) -> SJCConfig:
    """Parse YAML text (a dump, or a run's config.yaml with its version) into a config."""
    data = yaml.safe_load(text) or {}
    data.pop("version", None)
    return SJCConfig.model_validate(data)


def load_config(path: str | Path) -> SJCConfig:
    """Read a config.yaml written by `dump_config`."""
    return load_config_text(Path(path).read_text())


# Flags a resumed or re-evaluated run may change: they steer how or how long it runs, or how it
# is evaluated, not what it computes up to its current step.
SAFE_ON_RESUME: frozenset[str] = frozenset(
    {
        "n_steps",
        "device",
        "threads",
        "sd.model_id",
        "save_every",
        "vis_every",
        "log_every",
        "keep_checkpoints",
        "pose.n_test_frames",
        "pose.test_rounds",
        "export_mesh",
    }
)
SAFE_GROUPS_ON_RESUME: tuple[str, ...] = ("eval.", "metrics.", "log.")


def flat_values(cfg: BaseModel, prefix: str = "") -> dict[str, object]:
    """Every leaf value of a config by dotted flag name."""
    values: dict[str, object] = {}
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            values.update(flat_values(value, f"{prefix}{name}."))
        else:
            values[prefix + name] = value
    return values


def is_safe_on_resume(name: str) -> bool:
    """Whether flag `name` may be changed on --resume / --eval_only."""
    return name in SAFE_ON_RESUME or name.startswith(SAFE_GROUPS_ON_RESUME)


def resume_changes(saved: SJCConfig, new: SJCConfig) -> dict[str, list[object]]:
    """Flags whose value differs between a run's saved config and `new`, as [old, new].

    Raises ConfigError for a flag that may not change: the run directory's config is the
    authority on what the run computes.
    """
    old_values, new_values = flat_values(saved), flat_values(new)
    changes = {
        name: [old_values.get(name), value]
        for name, value in new_values.items()
        if name != "out_dir" and old_values.get(name) != value
    }
    unsafe = sorted(name for name in changes if not is_safe_on_resume(name))
    if unsafe:
        allowed = ", ".join(f"--{name}" for name in sorted(SAFE_ON_RESUME))
        raise ConfigError(
            f"--{unsafe[0]} cannot change on --resume/--eval_only (the run directory's "
            f"config.yaml is the authority; start a new run instead); allowed: {allowed}, "
            "--eval.*, --metrics.*, --log.*"
        )
    return changes
