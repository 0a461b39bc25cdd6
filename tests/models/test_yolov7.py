"""YOLOv7 topologies: official layer indices, key names, shapes and parameter counts;
state_dict round trips; decoding; fusion."""

import pytest
import torch

from bench.errors import ConfigError
from bench.models.common import RepConv
from bench.models.fuse import fuse
from bench.models.yolov7 import build_model, scale_channels

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_full():
    return build_model("yolov7-tiny")


@pytest.fixture(scope="module")
def yolov7_full():
    torch.manual_seed(0)
    return build_model("yolov7")


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_yolov7_parameter_counts_match_official(yolov7_full):
    # Official yolov7.yaml with Detect: 37,620,125 (WongKinYiu/yolov7 issue #504);
    # IDetect adds ImplicitA (256+512+1024) and ImplicitM (3 x 255) = 2,557.
    assert _params(yolov7_full) == 37_620_125 + 2_557
    # The paper's 36.9M is the re-parameterised model: official counts 36,907,898, which
    # still includes the 2,557 implicit values that our fuse() folds away.
    assert _params(fuse(yolov7_full)) == 36_907_898 - 2_557


def test_tiny_parameter_count_is_official_6_2m(tiny_full):
    model = tiny_full
    assert round(_params(model) / 1e5) == 62
    assert round(_params(fuse(model)) / 1e5) == 62
    assert len(model.model) == 78 and len(build_model("yolov7-tiny", width=0.25).model) == 78


@pytest.mark.parametrize("key,shape", [
    ("model.0.conv.weight", (32, 3, 3, 3)),          # Conv [32, 3, 2], LeakyReLU
    ("model.1.bn.running_mean", (64,)),
    ("model.7.conv.weight", (64, 128, 1, 1)),        # ELAN concat of 4 x 32
    ("model.28.conv.weight", (512, 1024, 1, 1)),     # 4 x 256 -> 512
    ("model.37.conv.weight", (256, 512, 1, 1)),      # after Concat [-1, -7]: 256 + 256
    ("model.40.conv.weight", (128, 256, 1, 1)),      # route from backbone layer 21
    ("model.76.conv.weight", (512, 256, 3, 3)),
    ("model.77.m.0.weight", (255, 128, 1, 1)),
    ("model.77.m.2.bias", (255,)),
    ("model.77.ia.1.implicit", (1, 256, 1, 1)),
    ("model.77.im.2.implicit", (1, 255, 1, 1)),
    ("model.77.anchors", (3, 3, 2)),
    ("model.77.anchor_grid", (3, 1, 3, 1, 1, 2)),
])
def test_tiny_official_keys_and_shapes(tiny_full, key, shape):
    state = tiny_full.state_dict()
    assert tuple(state[key].shape) == shape


@pytest.mark.parametrize("key,shape", [
    ("model.0.conv.weight", (32, 3, 3, 3)),
    ("model.11.conv.weight", (256, 256, 1, 1)),      # concat of 4 x 64
    ("model.16.cv1.conv.weight", None),              # a Concat layer has no weights
    ("model.51.cv1.conv.weight", (512, 1024, 1, 1)),  # SPPCSPC
    ("model.51.cv5.conv.weight", (512, 2048, 1, 1)),
    ("model.51.cv7.conv.weight", (512, 1024, 1, 1)),
    ("model.63.conv.weight", (256, 1024, 1, 1)),     # head ELAN: 256+256+4 x 128
    ("model.102.rbr_dense.0.weight", (256, 128, 3, 3)),
    ("model.102.rbr_1x1.0.weight", (256, 128, 1, 1)),
    ("model.104.rbr_dense.1.running_var", (1024,)),
    ("model.105.m.2.weight", (255, 1024, 1, 1)),
    ("model.105.ia.0.implicit", (1, 256, 1, 1)),
])
def test_yolov7_official_keys_and_shapes(yolov7_full, key, shape):
    state = yolov7_full.state_dict()
    if shape is None:
        assert key not in state
    else:
        assert tuple(state[key].shape) == shape


def test_activations_follow_official():
    tiny, big = build_model("yolov7-tiny", width=0.25), build_model("yolov7", width=0.25)
    assert isinstance(tiny.model[0].act, torch.nn.LeakyReLU)
    assert tiny.model[0].act.negative_slope == 0.1
    assert isinstance(big.model[0].act, torch.nn.SiLU)
    assert isinstance(big.model[102], RepConv) and big.model[102].rbr_identity is None
    assert tiny.model[0].bn.eps == 1e-3


def test_state_dict_round_trip_weights_only_strict(tmp_path):
    torch.manual_seed(1)
    source = build_model("yolov7", num_classes=3, width=0.25).eval()
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    target = build_model("yolov7", num_classes=3, width=0.25).eval()
    target.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_mismatched_state_dict_fails_strict():
    state = build_model("yolov7-tiny", num_classes=3, width=0.25).state_dict()
    state["model.77.ia.0.extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        build_model("yolov7-tiny", num_classes=3, width=0.25).load_state_dict(state, strict=True)


def test_width_rounds_channels_to_multiples_of_8():
    assert scale_channels(32, 0.25) == 8 and scale_channels(64, 0.33) == 24
    state = build_model("yolov7-tiny", width=0.33).state_dict()
    assert state["model.0.conv.weight"].shape[0] == 16   # ceil(32 * 0.33 / 8) * 8
    assert state["model.28.conv.weight"].shape[0] == 176  # ceil(512 * 0.33 / 8) * 8


@pytest.mark.parametrize("kwargs,needle", [
    ({"arch": "yolov9"}, "'yolov9'.*yolov7-tiny"),
    ({"num_classes": 0}, "num_classes 0"),
    ({"width": 0}, "width 0"),
])
def test_bad_arguments_raise_config_error(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        build_model(**kwargs)


def test_training_outputs_follow_strides():
    model = build_model("yolov7-tiny", num_classes=2, width=0.25).train()
    raw = model(torch.zeros(2, 3, 64, 96))
    assert [tuple(r.shape) for r in raw] == [(2, 3, 8, 12, 7), (2, 3, 4, 6, 7), (2, 3, 2, 3, 7)]


def test_eval_decodes_grid_layout_in_pixels():
    model = build_model("yolov7-tiny", num_classes=2, width=0.25).eval()
    for conv in model.head.m:  # every logit 0 -> every sigmoid 0.5
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 7)
    # First row: level 0 (stride 8), anchor 0 (10x13 px), cell (0, 0): centre = 0.5 * 8.
    torch.testing.assert_close(out[0, 0], torch.tensor([4.0, 4.0, 10.0, 13.0, 0.5, 0.5, 0.5]))
    # Row of level 0, anchor 1, cell (y=2, x=3).
    row = 64 + 2 * 8 + 3
    torch.testing.assert_close(out[0, row, :4], torch.tensor([28.0, 20.0, 16.0, 30.0]))
    last = out[0, -1]  # level 2 (stride 32), anchor 2 (373x326), cell (1, 1)
    torch.testing.assert_close(last[:4], torch.tensor([48.0, 48.0, 373.0, 326.0]))


def _randomise_batch_norms(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("arch", ["yolov7-tiny", "yolov7"])
def test_fused_model_matches_unfused(arch):
    torch.manual_seed(2)
    model = build_model(arch, num_classes=4, width=0.25)
    _randomise_batch_norms(model)
    model.eval()
    fused = fuse(model)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want, got = model(x), fused(x)
    torch.testing.assert_close(got[..., 4:], want[..., 4:], rtol=0, atol=1e-4)
    torch.testing.assert_close(got[..., :4], want[..., :4], rtol=1e-5, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original intact


def test_repconv_with_identity_branch_fuses_exactly():
    torch.manual_seed(3)
    block = RepConv(16, 16, act="silu")
    _randomise_batch_norms(block)
    block.eval()
    x = torch.rand(2, 16, 9, 9)
    with torch.no_grad():
        want = block(x)
        got = fuse(block)(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_depth_is_accepted_and_changes_nothing():
    a = build_model("yolov7-tiny", width=0.25, depth=0.33).state_dict()
    b = build_model("yolov7-tiny", width=0.25).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
