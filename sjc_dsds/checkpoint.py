"""Checkpoints in safetensors: field, optimiser state, step, RNG state, config; atomic writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from sjc_dsds.errors import CheckpointError
from sjc_dsds.run_dir import atomic_write_bytes

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    field_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    generator_state: torch.Tensor
    config_yaml: str


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """Split an optimizer state_dict into tensors and JSON-able param groups."""
    tensors = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optimizer.{index}.{name}"] = tensor.detach().cpu().contiguous()
    return tensors, state["param_groups"]


def save_checkpoint(
    path: Path,
    step: int,
    field: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config_yaml: str,
) -> None:
    """Write a checkpoint to `path` atomically (temporary file, then rename)."""
    tensors = {
        f"field.{name}": value.detach().cpu().contiguous()
        for name, value in field.state_dict().items()
    }
    optimizer_tensors, param_groups = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optimizer_tensors)
    tensors["generator_state"] = generator.get_state()
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "step": str(step),
        "param_groups": json.dumps(param_groups),
        "config_yaml": config_yaml,
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (safetensors only: no pickle)."""
    try:
        data = path.read_bytes()
        tensors = load(data)
        metadata = _read_metadata(data)
    except (OSError, SafetensorError, ValueError, KeyError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from None
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"checkpoint {path} has format {metadata.get('format_version')}, "
            f"this version reads {FORMAT_VERSION}"
        )
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
    return Checkpoint(
        step=int(metadata["step"]),
        field_state=field_state,
        optimizer_state=optimizer_state,
        generator_state=tensors["generator_state"],
        config_yaml=metadata["config_yaml"],
    )


def _read_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors file (its JSON header's __metadata__)."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return header.get("__metadata__", {})
