"""Flag groups every run shares (field, cameras, view prompts, masked LM, evaluation, logs).

The base `Group` lives here too; family groups are in `families.py`, the whole run in
`config.py`. Imports no torch.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class VoxConfig(Group):
    """Voxel radiance field and ray marching (`--vox.*`)."""

    model_type: Literal["V_SD", "V_SJC"] | None = Field(
        None,
        json_schema_extra={"derived": True},
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
        json_schema_extra={"derived": True},
        description="Feature channels; default follows --family (sd: 4, toy and deepfloyd: 3).",
    )
    blend_bg_texture: bool | None = Field(
        None,
        json_schema_extra={"derived": True},
        description="Blend a learned background texture; default follows --family (sd, deepfloyd: "
        "True; toy: False, its prior has a fixed background).",
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
