"""Published IQE-CLIP checkpoints in and out: every tensor lands where the published computation
uses it (forwards computed by hand from the published-layout tensors), the round trip is exact,
and a tampered file is one line that writes nothing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from iqeclip.apps.published import export_published, import_checkpoint
from iqeclip.errors import UserError
from iqeclip.model.checkpoint import read_checkpoint
from iqeclip.model.detector import IQEClip
from tests.unit.model.published_files import TEXT_BLOCK, flat, published_state, write_published

TINY = {"model_name": "iqe-tiny", "pretrain": "none", "img_size": 64}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_published(tmp_path / "Brain_4.pth")


def _layer_norm(x, p, name):
    return F.layer_norm(x, x.shape[-1:], p[f"{name}.weight"], p[f"{name}.bias"], eps=1e-12)


def _attention(x, memory, p, block, heads):
    """A BERT-style attention block (Hugging Face names), post-LayerNorm, by hand."""

    def linear(t, name):
        return t @ p[f"{block}.{name}.weight"].T + p[f"{block}.{name}.bias"]

    b, t, d = x.shape
    q, k, v = (
        linear(s, f"attention.{n}").view(b, -1, heads, d // heads).transpose(1, 2)
        for s, n in ((x, "query"), (memory, "key"), (memory, "value"))
    )
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    context = (probs @ v).transpose(1, 2).reshape(b, t, d)
    return _layer_norm(x + linear(context, "output.dense"), p, f"{block}.output.LayerNorm")


def test_every_tensor_lands_where_the_published_computation_uses_it(source):
    model = IQEClip.from_published(source, **TINY, use_global=True)
    p = flat(torch.load(str(source), weights_only=True))
    head = model.head
    torch.manual_seed(1)
    tokens = torch.randn(3, 5, 64)
    for level in range(4):  # the per-level projections
        expected = tokens @ p[f"trainable_linearlayer.fc.{level}.weight"].T
        expected = expected + p[f"trainable_linearlayer.fc.{level}.bias"]
        torch.testing.assert_close(head.projections[level](tokens), expected)
    g = torch.randn(3, 128)  # the class tokens: prompt_query + Conv1d(1 -> r, k=3, same)(g)
    conv = F.conv1d(g[:, None], p["New_Lan_Embed.prompt_linear1.fc.weight"], padding=1)
    expected = (
        p["New_Lan_Embed.prompt_query"]
        + conv
        + p["New_Lan_Embed.prompt_linear1.fc.bias"][None, :, None]
    )
    torch.testing.assert_close(head.class_tokens(g), expected)
    queries = p["query_tokens"] + F.conv1d(g[:, None], p["query_linear.fc.weight"], padding=1)
    queries = queries + p["query_linear.fc.bias"][None, :, None]
    torch.testing.assert_close(head.queries(g), queries)
    assert head.class_tokens.prompt_temp.item() == p["New_Lan_Embed.prompt_temp"].item()
    # one IQM layer, by hand from the published names
    layer = {k.removeprefix("iqm.encoder.layer.2."): v for k, v in p.items()}
    h, image, text = torch.randn(3, 2, 128), torch.randn(3, 17, 128), torch.randn(3, 2, 128)
    x = _attention(h, h, layer, "attention", 8)
    x = _attention(x, image, layer, "crossattention", 8)
    x = _attention(x, text, layer, TEXT_BLOCK, 8)
    ffn = F.gelu(
        x @ layer["intermediate_query.dense.weight"].T + layer["intermediate_query.dense.bias"]
    )
    out = ffn @ layer["output_query.dense.weight"].T + layer["output_query.dense.bias"]
    expected = _layer_norm(x + out, layer, "output_query.LayerNorm")
    with torch.no_grad():
        torch.testing.assert_close(head.iqm.layers[2](h, image, text), expected)
    torch.testing.assert_close(
        head.text_prompts.deep_prompt_embeddings, p["deep_prompt_embeddings"]
    )


def test_without_use_global_the_unused_convs_are_left_out(source, tmp_path):
    out, imported = import_checkpoint(source, tmp_path / "ck" / "Brain_4.pth", TINY, shot=4)
    assert imported["assumed"] == {"use_global": False}
    assert imported["read"] == {
        "prompt_len": 2,
        "deep_prompt_len": 1,
        "total_d_layer_len": 11,
        "iqm_layers": 4,
    }
    assert imported["dropped"] == [
        "New_Lan_Embed.prompt_linear1.fc.bias",
        "New_Lan_Embed.prompt_linear1.fc.weight",
        "prompt_text_projection",
        "query_linear.fc.bias",
        "query_linear.fc.weight",
    ]
    config, state, meta = read_checkpoint(out)
    assert config.use_global is False and config.iqm_heads == 8
    assert meta["run"] == {"setting": "few", "shot": 4, "obj": "custom", "select": "target-test"}
    assert meta["imported"]["file"] == "Brain_4.pth" and len(meta["imported"]["sha256"]) == 64
    published = flat(torch.load(str(source), weights_only=True))
    used = {n: t for n, t in published.items() if n not in imported["dropped"]}
    assert sum(t.numel() for t in used.values()) == sum(t.numel() for t in state.values())


@pytest.mark.parametrize("use_global", [False, True])
def test_round_trip_is_exact(source, tmp_path, use_global):
    ckpt, imported = import_checkpoint(
        source, tmp_path / "ck.pth", {**TINY, "use_global": use_global}
    )
    back, block = export_published(ckpt, tmp_path / "back.pth")
    assert block == TEXT_BLOCK
    original = flat(torch.load(str(source), weights_only=True))
    again = flat(torch.load(str(back), weights_only=True))
    assert set(again) == set(original)
    for name, tensor in original.items():
        if name in imported["dropped"]:  # the unused matrix, and the convs without use_global
            assert not again[name].any(), name
        else:
            assert torch.equal(again[name], tensor), name
            assert again[name].dtype == torch.float32


@pytest.mark.slow
def test_the_papers_sizes_count_51_017_489_tensors(tmp_path):
    source = write_published(tmp_path / "paper.pth", width=768, vision_width=1024)
    flat_state = flat(torch.load(str(source), weights_only=True))
    used = sum(t.numel() for n, t in flat_state.items() if n != "prompt_text_projection")
    assert used == 51_017_489  # REFERENCE's count of what receives gradients (use_global)
    out, imported = import_checkpoint(source, tmp_path / "Brain.pth", {"use_global": True})
    assert imported["assumed"] == {"model_name": "ViT-L-14-336", "img_size": 240}
    config, state, _ = read_checkpoint(out)
    assert config.features_list == [6, 12, 18, 24]
    assert sum(t.numel() for t in state.values()) == 51_017_489


def _tampered(tmp_path: Path, change) -> Path:
    state = published_state()
    change(state)
    path = tmp_path / "tampered.pth"
    torch.save(state, str(path))
    return path


class Smuggled:  # an unknown class in the pickle
    pass


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda s: s["iqm"].pop("encoder.layer.1.crossattention.output.dense.weight"),
            "no tensor iqm.encoder.layer.1.crossattention.output.dense.weight",
        ),
        (
            lambda s: s["trainable_linearlayer"].__setitem__(
                "fc.2.weight", s["trainable_linearlayer"]["fc.2.weight"].T.contiguous()
            ),
            "fc.2.weight has shape (64, 128)",
        ),
        (lambda s: s.__setitem__("surprise", torch.zeros(3)), "surprise"),
        (lambda s: s.__setitem__("query_linear", Smuggled()), "cannot be read as tensors"),
        (
            lambda s: s["New_Lan_Embed"].__setitem__("prompt_query", torch.zeros(1, 3, 64)),
            "prompt_query",
        ),
    ],
)
def test_a_tampered_file_is_one_line_and_writes_nothing(tmp_path, change, says):
    path = _tampered(tmp_path, change)
    out = tmp_path / "ck" / "x.pth"
    with pytest.raises(UserError) as caught:
        import_checkpoint(path, out, TINY)
    message = str(caught.value)
    assert says in message and "\n" not in message
    assert not out.exists() and not out.parent.exists()


def test_flags_that_contradict_the_tensors_are_named(source, tmp_path):
    with pytest.raises(UserError, match="prompt_len 3: the tensors of"):
        import_checkpoint(source, tmp_path / "x.pth", {**TINY, "prompt_len": 3})
    with pytest.raises(UserError, match="model_name ViT-B-16"):
        import_checkpoint(source, tmp_path / "x.pth", {"model_name": "ViT-B-16", "img_size": 64})
    with pytest.raises(UserError, match="features_list"):
        import_checkpoint(source, tmp_path / "x.pth", {**TINY, "features_list": [3, 6]})
    with pytest.raises(UserError, match="setting few needs shot"):
        import_checkpoint(source, tmp_path / "x.pth", TINY, setting="few")
    assert not (tmp_path / "x.pth").exists()


def test_the_text_block_is_read_from_the_file(tmp_path):
    source = write_published(tmp_path / "other.pth", text_block="text_crossattention")
    ckpt, imported = import_checkpoint(source, tmp_path / "ck.pth", TINY)
    assert imported["text_block"] == "text_crossattention"
    back, block = export_published(ckpt, tmp_path / "back.pth")
    assert block == "text_crossattention"
    assert "iqm.encoder.layer.0.text_crossattention.output.dense.weight" in flat(
        torch.load(str(back), weights_only=True)
    )
