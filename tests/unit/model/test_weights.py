"""Weight files as users have them: every format, fp32/fp16/bf16, native and resized grids.

Every file is written here from a random-init model, in the form its publisher writes it (an
OpenAI-style TorchScript archive with fp16 matrices and fp32 LayerNorms included), and loaded
through the same path as ``--pretrain FILE``.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from iqeclip.cli.main import describe_weights, main
from iqeclip.config import ModelConfig
from iqeclip.errors import UserError
from iqeclip.model.backbone import Backbone, create_clip
from iqeclip.model.detector import IQEClip
from iqeclip.model.weights import describe, dtype_label, read_state_dict

FORMATS = ["torchscript", "state_dict", "wrapped_state_dict", "safetensors"]
# "openai": fp16 matrices, fp32 LayerNorms and embeddings, as OpenAI's own fp16 conversion leaves them.
DTYPES = ["fp32", "fp16", "bf16", "openai"]
LOW = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "openai": torch.float16,
}


def _file_dtype(key: str, dtype: str) -> torch.dtype:
    if dtype == "openai" and ("ln_" in key or "embedding" in key):
        return torch.float32
    return LOW[dtype]


def _native_tiny():
    torch.manual_seed(1)
    return create_clip("iqe-tiny", "none", 224, quick_gelu=False)


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """An fp32 TorchScript archive of the native model, traced once (tracing takes seconds).

    Like OpenAI's archives its state dict also holds ``input_resolution``.
    """
    native = _native_tiny()
    native.register_buffer("input_resolution", torch.tensor(224))
    path = tmp_path_factory.mktemp("ts") / "traced.pt"
    example = (torch.ones(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.int))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace_module(native, {"forward": example}), str(path))
    return path


def _values(dtype: str) -> dict[str, torch.Tensor]:
    """The native model's weights rounded to what a ``dtype`` file holds, as fp32."""
    state = _native_tiny().state_dict()
    return {
        k: v.to(_file_dtype(k, dtype)).float() if v.is_floating_point() else v
        for k, v in state.items()
    }


def _write(path, fmt: str, dtype: str, values, traced=None):
    """Write ``values`` in format ``fmt`` with the tensors of a ``dtype`` file."""
    state = {
        k: v.to(_file_dtype(k, dtype)) if v.is_floating_point() else v for k, v in values.items()
    }
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(traced))
            for name, p in module.named_parameters():
                p.data = state[name]
            torch.jit.save(module, str(path))
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "wrapped_state_dict":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)
    return path


def _resized(pe: torch.Tensor, grid: int) -> torch.Tensor:
    """A position embedding ``(1 + g*g, W)`` resized by hand to ``grid`` (bicubic, antialias)."""
    old = math.isqrt(pe.shape[0] - 1)
    img = pe[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([pe[:1], img.permute(0, 2, 3, 1).reshape(grid * grid, -1)])


def _reference_at(values, img_size: int) -> Backbone:
    """fp32 ``values`` with the grid resized by hand, at ``img_size``."""
    state = dict(values)
    state["visual.positional_embedding"] = _resized(
        state["visual.positional_embedding"], img_size // 16
    )
    ref = create_clip("iqe-tiny", "none", img_size, quick_gelu=False)
    ref.load_state_dict(state)
    return Backbone(ref, [2, 4])


@pytest.mark.parametrize("img_size", [224, 96])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_and_dtype_loads_with_the_fp32_files_features(
    tmp_path, traced, fmt, dtype, img_size
):
    values = _values(dtype)
    suffix = ".safetensors" if fmt == "safetensors" else ".pt"
    low = _write(tmp_path / f"w{suffix}", fmt, dtype, values, traced)
    fp32 = _write(tmp_path / "fp32.pt", "state_dict", "fp32", values)

    clip = create_clip("iqe-tiny", str(low), img_size, quick_gelu=False)
    assert {p.dtype for p in clip.state_dict().values() if p.is_floating_point()} == {torch.float32}
    loaded = Backbone(clip, [2, 4])
    from_fp32 = Backbone(create_clip("iqe-tiny", str(fp32), img_size, quick_gelu=False), [2, 4])
    ref = _reference_at(values, img_size)
    x = torch.rand(2, 3, img_size, img_size)
    got, same_values, by_hand = loaded(x), from_fp32(x), ref(x)
    for a, b, c in zip(got, same_values, by_hand, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_frozen_tensors_are_fp32_or_the_precision_asked_for(tmp_path):
    path = _write(tmp_path / "w16.pt", "state_dict", "fp16", _values("fp16"))
    cfg = dict(model_name="iqe-tiny", pretrain=str(path), img_size=64)
    fp32 = IQEClip.build(ModelConfig(**cfg))
    bf16 = IQEClip.build(ModelConfig(**cfg, precision="bf16"))
    assert {p.dtype for p in fp32.backbone.parameters()} == {torch.float32}
    assert {p.dtype for p in bf16.backbone.visual.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16.backbone.text.parameters()} == {torch.float32}
    torch.testing.assert_close(
        bf16.backbone.visual.conv1.weight, fp32.backbone.visual.conv1.weight.bfloat16()
    )


@pytest.mark.parametrize("fmt", ["state_dict", "safetensors"])
def test_shapes_only_reading_keeps_the_data_on_disk(tmp_path, fmt):
    values = _values("bf16")
    path = _write(
        tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pt"), fmt, "bf16", values
    )
    state = read_state_dict(path, shapes_only=True)
    assert {v.device.type for v in state.values()} == {"meta"}
    assert {k: (tuple(v.shape), v.dtype) for k, v in state.items()} == {
        k: (tuple(v.shape), v.to(torch.bfloat16).dtype if v.is_floating_point() else v.dtype)
        for k, v in values.items()
    }


def test_dtype_label_lists_the_largest_share_first():
    assert dtype_label({"a": torch.zeros(3, dtype=torch.float16)}) == "fp16"
    mixed = {"a": torch.zeros(1, dtype=torch.float32), "b": torch.zeros(5, dtype=torch.float16)}
    assert dtype_label({**mixed, "n": torch.zeros(9, dtype=torch.int64)}) == "fp16, fp32"


@pytest.mark.parametrize(
    ("fmt", "dtype", "label"),
    [
        # iqe-tiny's fp32 token embedding (49408 x 128) outweighs its fp16 matrices
        ("torchscript", "openai", "fp32, fp16"),
        ("state_dict", "fp16", "fp16"),
        ("safetensors", "bf16", "bf16"),
        ("wrapped_state_dict", "fp32", "fp32"),
    ],
)
def test_info_checks_the_file_and_names_its_dtype(tmp_path, traced, capsys, fmt, dtype, label):
    suffix = ".safetensors" if fmt == "safetensors" else ".pt"
    path = _write(tmp_path / f"w{suffix}", fmt, dtype, _values(dtype), traced)
    assert (
        main(["info", "--model_name", "iqe-tiny", "--pretrain", str(path), "--img_size", "64"]) == 0
    )
    assert f"weights: {path} matches iqe-tiny ({label})" in capsys.readouterr().out.splitlines()


def test_info_fails_on_a_file_that_does_not_fit(tmp_path, capsys):
    path = _write(tmp_path / "w.safetensors", "safetensors", "fp16", _values("fp16"))
    assert main(["info", "--model_name", "ViT-B-16", "--pretrain", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        f"error: --pretrain {path}: weights do not fit ViT-B-16: the file holds iqe-tiny"
    )


def test_info_names_none_and_tags_without_a_file():
    assert describe_weights("iqe-tiny", "none", 64).startswith("weights: none (random init")
    assert describe_weights("ViT-B-16", "openai", 240).startswith("weights: open_clip tag openai")
    with pytest.raises(UserError, match=r"^pretrain 'nonsense'"):
        describe_weights("iqe-tiny", "nonsense", 64)


def test_describe_names_the_architecture_a_file_holds():
    clip = create_clip("ViT-B-32", "none", 224, quick_gelu=False, device="meta")
    text = describe(clip.state_dict())
    assert text.startswith(
        "ViT-B-32 (patch 32, width 768, 12 vision blocks, 224 px, embed_dim 512)"
    )
    assert describe({"foo.weight": torch.zeros(2)}) == "no CLIP ViT (keys such as foo.weight)"


def test_bad_weight_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_state_dict(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.pt: cannot read weights"):
        read_state_dict(junk)
    other = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(2)}, other)
    with pytest.raises(UserError, match="weights do not fit iqe-tiny: the file holds no CLIP ViT"):
        create_clip("iqe-tiny", str(other), 64, quick_gelu=False)
    with pytest.raises(UserError, match=r"^pretrain 'nonsense'"):
        create_clip("iqe-tiny", "nonsense", 64, quick_gelu=False)
    partial = _values("fp32")
    del partial["visual.ln_post.weight"]
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(UserError, match=r"missing keys such as visual\.ln_post\.weight"):
        create_clip("iqe-tiny", str(tmp_path / "partial.pt"), 64, quick_gelu=False)


@pytest.mark.slow
def test_paper_configuration_runs_on_an_fp16_weights_file(tmp_path):
    """ViT-L-14-336 at 240 px from an fp16 file, as OpenAI ships it: the crash this file guards."""
    native = create_clip("ViT-L-14-336", "none", 336, quick_gelu=False)
    state = {k: v.half() for k, v in native.state_dict().items()}
    del native
    path = tmp_path / "ViT-L-14-336px-fp16.pt"
    torch.save(state, path)
    paper = dict(
        features_list=[6, 12, 18, 24], prompt_len=2, deep_prompt_len=1, total_d_layer_len=11
    )
    model = IQEClip.build(
        ModelConfig(model_name="ViT-L-14-336", pretrain=str(path), img_size=240, **paper)
    )

    visual = model.backbone.visual
    assert {p.dtype for p in model.backbone.parameters()} == {torch.float32}
    assert torch.equal(visual.conv1.weight, state["visual.conv1.weight"].float())
    # the 24x24 grid of 336 px resized to the 17x17 grid of 240 px, in fp32
    pe = _resized(state["visual.positional_embedding"].float(), 17)
    assert torch.equal(visual.positional_embedding, pe)
    patch, glob = model.features(torch.rand(1, 3, 240, 240))
    assert patch.shape == (4, 1, 17 * 17, 1024) and glob.shape == (1, 768)
    maps, scores = model.predict_features(patch, glob, "few")
    assert maps.shape == (1, 240, 240) and scores.shape == (1,)
    assert torch.isfinite(maps).all() and ((maps >= 0) & (maps <= 1)).all()
