"""A-LPIPS and CLIP metrics: tiny random CLIP / VGG saved and reloaded, oracles, missing weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sjc_dsds.cli import build_config
from sjc_dsds.evaluate_metrics import (
    a_lpips,
    clip_transform,
    compute_metrics,
    load_lpips_vgg,
    main,
    orbit_frame_paths,
)
from sjc_dsds.random_models import VGG16_CONVS, build_tiny_clip, random_vgg16_state_dict
from sjc_dsds.run_dir import RunDir, write_config

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
PROMPT = "a head"
DISTRACTORS = ("a photo of a dog", "a photo of a car", "a photo of a tree")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def write_frames(folder: Path, n: int = 4, size: tuple[int, int] = (48, 32)) -> list[np.ndarray]:
    """n random RGB frames named frame_0 .. frame_{n-1} (no zero padding); returns them."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    frames = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(n)]
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{index}.png")
    return frames


def metrics_config(clip_dir: Path | str, trunk: Path | str | None = None):
    flags = {
        "family": "toy",
        "metrics.clip_model_id": str(clip_dir),
        "metrics.clip_distractors": ",".join(DISTRACTORS),
    }
    if trunk is not None:
        flags["metrics.lpips_trunk"] = str(trunk)
    return build_config(flags)


def test_orbit_order_is_numeric_and_a_lpips_pairs_neighbours(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in (10, 2, 1):
        (folder / f"frame_{index}.png").write_bytes(b"")
    assert [p.name for p in orbit_frame_paths(folder)] == [
        "frame_1.png",
        "frame_2.png",
        "frame_10.png",
    ]
    frames = torch.tensor([0.0, 1.0, 3.0, 6.0]).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    pairs = []
    value = a_lpips(frames, lambda a, b: pairs.append((a, b)) or (b - a).abs().mean((1, 2, 3)))
    assert value == pytest.approx((1 + 2 + 3) / 3)
    assert torch.equal(pairs[0][0], frames[:-1]) and torch.equal(pairs[0][1], frames[1:])


def test_frames_go_through_clips_224_transform() -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 300, 3), np.uint8))
    pixels = clip_transform()(images=[image], return_tensors="pt")["pixel_values"][0]
    # Oracle: bicubic resize of the short side to 224, centre crop 224, CLIP mean/std.
    resized = image.resize((336, 224), Image.BICUBIC)
    left = (336 - 224) // 2
    crop = np.asarray(resized.crop((left, 0, left + 224, 224))) / 255.0
    expected = torch.from_numpy((crop - CLIP_MEAN) / CLIP_STD).permute(2, 0, 1).float()
    assert pixels.shape == (3, 224, 224)
    assert (pixels - expected).abs().max() < 0.02


def test_clip_metrics_equal_a_direct_computation(tmp_path: Path, tiny_clip_dir: Path) -> None:
    from transformers import CLIPModel, CLIPProcessor

    frames = write_frames(tmp_path / "frames")
    results = compute_metrics(tmp_path / "frames", metrics_config(tiny_clip_dir), ["clip"])
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    texts = [PROMPT, *DISTRACTORS]
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    pixels = processor.image_processor([Image.fromarray(f) for f in frames], return_tensors="pt")
    with torch.no_grad():
        image = model.visual_projection(model.vision_model(pixels["pixel_values"]).pooler_output)
        text = model.text_projection(model.text_model(**tokens).pooler_output)
    cosine = (
        torch.nn.functional.normalize(image, dim=-1)
        @ torch.nn.functional.normalize(text, dim=-1).t()
    )
    expected_score = float((100 * cosine[:, 0]).clamp_min(0).mean())
    expected_r = float((cosine.argmax(1) == 0).float().mean())
    assert results["clip_score"] == pytest.approx(expected_score, abs=1e-4)
    assert results["clip_cosine_mean"] == pytest.approx(float(cosine[:, 0].mean()), abs=1e-6)
    assert results["clip_cosine_mean"] != 0
    assert results["clip_r_precision"] == pytest.approx(expected_r)
    assert "unavailable" not in results


def test_missing_weights_are_unavailable_not_numbers(tmp_path: Path, caplog) -> None:
    write_frames(tmp_path / "frames")
    cfg = metrics_config(tmp_path / "no_clip", trunk=tmp_path / "no_vgg.pth")
    results = compute_metrics(tmp_path / "frames", cfg, ["a_lpips", "clip"])
    assert results["a_lpips"] is None and results["clip_score"] is None
    assert results["clip_r_precision"] is None
    reasons = results["unavailable"]
    assert "vgg16-397923af.pth" in reasons["a_lpips"] and "no_vgg.pth" in reasons["a_lpips"]
    assert "--metrics.clip_model_id" in reasons["clip"]
    assert all("\n" not in reason for reason in reasons.values())


def _lpips_importable() -> bool:
    try:
        import lpips  # noqa: F401
    except Exception:  # torchvision built for another torch fails with RuntimeError
        return False
    return True


@pytest.mark.skipif(not _lpips_importable(), reason="lpips/torchvision not importable here")
def test_a_lpips_with_a_random_trunk_equals_the_lpips_formula(tmp_path: Path) -> None:
    trunk_path = tmp_path / "vgg16.pth"
    state = random_vgg16_state_dict()
    torch.save(state, trunk_path)
    model = load_lpips_vgg(trunk_path, torch.device("cpu"))
    assert torch.equal(model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(model.net.slice5[28].weight, state["features.28.weight"])
    a, b = torch.rand(2, 2, 3, 64, 64) * 2 - 1
    # Oracle: unit-normalised VGG activations after relu 1_2, 2_2, 3_3, 4_3, 5_3, squared
    # difference weighted by the v0.1 linear layers, spatial mean, sum over layers.
    cuts = (4, 9, 16, 23, 30)
    convs = {
        i: (state[f"features.{i}.weight"], state[f"features.{i}.bias"]) for i, _, _ in VGG16_CONVS
    }

    def activations(x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - model.scaling_layer.shift) / model.scaling_layer.scale
        out = []
        for index in range(30):
            if index in convs:
                x = torch.nn.functional.conv2d(x, *convs[index], padding=1)
            elif index in (4, 9, 16, 23):
                x = torch.nn.functional.max_pool2d(x, 2)
            else:
                x = torch.relu(x)
            if index + 1 in cuts:
                out.append(x)
        return out

    total = 0
    for layer, (fa, fb) in enumerate(zip(activations(a), activations(b), strict=True)):
        fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + model.lins[layer].model((fa - fb) ** 2).mean((2, 3))
    with torch.no_grad():
        got = model(a, b, normalize=False).flatten()
    assert torch.allclose(got, total.flatten(), rtol=1e-4, atol=1e-6)


def test_cli_writes_both_metrics_to_the_runs_metrics_json(tmp_path: Path, tiny_clip_dir) -> None:
    run = tmp_path / "run"
    write_frames(run / "test" / "frames")
    torch.save(random_vgg16_state_dict(), tmp_path / "vgg16.pth")
    cfg = metrics_config(tiny_clip_dir, trunk=tmp_path / "vgg16.pth")
    write_config(RunDir(run), cfg)  # as run_sjc writes it, with the package version
    (run / "test" / "metrics.json").write_text(json.dumps({"orbit_l1_frame_difference": 0.5}))
    assert main([str(run), "--metrics", "a_lpips,clip"]) == 0
    written = json.loads((run / "test" / "metrics.json").read_text())
    assert written["orbit_l1_frame_difference"] == 0.5  # kept
    assert isinstance(written["clip_score"], float) and 0 <= written["clip_r_precision"] <= 1
    assert "a_lpips" in written
    if written["a_lpips"] is None:  # no usable lpips/torchvision here: the reason says so
        assert "lpips" in written["unavailable"]["a_lpips"]
    else:
        assert written["a_lpips"] > 0 and "unavailable" not in written


def test_cli_bad_metric_name_is_one_line(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path), "--metrics", "fid"]) == 2
    assert capsys.readouterr().err.startswith("error: --metrics must be a comma list")
