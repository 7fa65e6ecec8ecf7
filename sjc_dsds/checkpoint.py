"""Checkpoints in safetensors: field, optimiser, step, random streams, config, and a checksum."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from sjc_dsds.config import SJCConfig, load_config_text
from sjc_dsds.errors import CheckpointError
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.run_dir import RunDir, atomic_write_bytes
from sjc_dsds.runtime import make_generator

FORMAT_VERSION = 2
STREAM_PREFIX = "rng."

logger = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    field_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    stream_states: dict[str, torch.Tensor]
    config_yaml: str


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """Split an optimizer state_dict into tensors and JSON-able param groups."""
    tensors = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optimizer.{index}.{name}"] = tensor.detach().cpu().contiguous()
    return tensors, state["param_groups"]


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of `tensors`, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(
    path: Path,
    step: int,
    field: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    stream_states: dict[str, torch.Tensor],
    config_yaml: str,
) -> None:
    """Write a checkpoint to `path` atomically (temporary file, then rename), with a checksum."""
    tensors = {
        f"field.{name}": value.detach().cpu().contiguous()
        for name, value in field.state_dict().items()
    }
    optimizer_tensors, param_groups = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optimizer_tensors)
    tensors.update({STREAM_PREFIX + name: state for name, state in stream_states.items()})
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "step": str(step),
        "param_groups": json.dumps(param_groups),
        "config_yaml": config_yaml,
        "sha256": tensors_digest(tensors),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and verify a checkpoint written by `save_checkpoint` (safetensors only: no pickle)."""
    try:
        data = path.read_bytes()
        tensors = load(data)
        metadata = _read_metadata(data)
    except (OSError, SafetensorError, ValueError, KeyError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from None
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"checkpoint {path} has format {metadata.get('format_version')}, "
            f"this version reads {FORMAT_VERSION}"
        )
    if tensors_digest(tensors) != metadata.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt (its checksum does not match)")
    field_state = {k[len("field.") :]: v for k, v in tensors.items() if k.startswith("field.")}
    optimizer_entries: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer_entries.setdefault(int(index), {})[name] = value
    optimizer_state = {
        "state": optimizer_entries,
        "param_groups": json.loads(metadata["param_groups"]),
    }
    streams = {
        k[len(STREAM_PREFIX) :]: v for k, v in tensors.items() if k.startswith(STREAM_PREFIX)
    }
    return Checkpoint(
        step=int(metadata["step"]),
        field_state=field_state,
        optimizer_state=optimizer_state,
        stream_states=streams,
        config_yaml=metadata["config_yaml"],
    )


def load_newest_readable(paths: list[Path], flag: str = "--resume") -> Checkpoint:
    """Load the newest checkpoint of `paths` (sorted oldest first) that reads and verifies.

    Skipping an unreadable one is said in one log line; if none reads, a CheckpointError
    names every file tried.
    """
    problems = []
    for path in reversed(paths):
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        if problems:
            logger.warning("%s: %s; using %s instead", flag, "; ".join(problems), path.name)
        return checkpoint
    names = ", ".join(path.name for path in paths)
    raise CheckpointError(f"{flag}: no checkpoint loads ({names}): {'; '.join(problems)}")


def _read_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors file (its JSON header's __metadata__)."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return header.get("__metadata__", {})


def load_field(
    run_dir: Path, flag: str = "--eval_only", step: int | None = None
) -> tuple[SJCConfig, VoxelRadianceField, int]:
    """Config, field (on CPU) and step of a run's checkpoint: `step`'s, else the newest readable."""
    run = RunDir(run_dir)
    if step is not None:
        path = run.checkpoint_path(step)
        if not path.is_file():
            where = path.parent
            raise CheckpointError(f"{flag} {run_dir}: no checkpoint of step {step} in {where}")
        checkpoint = load_checkpoint(path)
    else:
        paths = run.checkpoint_paths()
        if not paths:
            raise CheckpointError(f"{flag} {run_dir}: no checkpoint in {run.checkpoints}")
        checkpoint = load_newest_readable(paths, flag)
    cfg = load_config_text(checkpoint.config_yaml)
    field = VoxelRadianceField.from_config(cfg.vox, torch.device("cpu"), make_generator(0))
    field.load_state_dict(checkpoint.field_state)
    return cfg, field, checkpoint.step


def prune_checkpoints(run: RunDir, keep: int, n_steps: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints (and the final one), once the newest loads.

    The newest is read back and verified first, so pruning never removes the only readable
    checkpoint.
    """
    paths = run.checkpoint_paths()
    if len(paths) <= keep:
        return []
    try:
        load_checkpoint(paths[-1])
    except CheckpointError as error:
        logger.warning("not pruning old checkpoints: %s", error)
        return []
    final = run.checkpoint_path(n_steps)
    doomed = [path for path in paths[:-keep] if path != final]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed
