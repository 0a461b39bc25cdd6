import numpy as np
import pytest

from bench.data.letterbox import PAD_VALUE, letterbox, letterbox_rgb, plan, unletterbox_boxes


def test_plan_downscale_landscape_hand_computed():
    box = plan((274, 301), 256)  # r = 256/301; 274 * r = 233.04
    assert box.new_shape == (233, 256)
    assert box.pad == (0, 11)  # dh = 11.5 -> round(11.4) on top, 12 below
    assert box.ratio == pytest.approx((256 / 301, 233 / 274))


@pytest.mark.parametrize(
    "shape, imgsz, new, pad",
    [
        ((100, 50), 64, (64, 32), (16, 0)),  # portrait, downscale
        ((20, 10), 64, (64, 32), (16, 0)),  # upscaled like YOLOv7's loader
        ((30, 64), 64, (30, 64), (0, 17)),  # dh = 17.0 -> 17 above, 17 below
        ((31, 64), 64, (31, 64), (0, 16)),  # dh = 16.5 -> 16 above, 17 below
        ((64, 64), 64, (64, 64), (0, 0)),
    ],
)
def test_plan_cases(shape, imgsz, new, pad):
    box = plan(shape, imgsz)
    assert box.new_shape == new and box.pad == pad and box.orig_shape == shape


def test_letterbox_pixels_pad_and_scale():
    rgb = np.full((31, 64, 3), (10, 200, 30), dtype=np.uint8)
    canvas, box = letterbox_rgb(rgb, 64)
    assert canvas.shape == (64, 64, 3) and canvas.dtype == np.uint8
    assert (canvas[:16] == PAD_VALUE).all() and (canvas[47:] == PAD_VALUE).all()
    assert (canvas[16:47] == (10, 200, 30)).all()
    chw, _ = letterbox(rgb, 64)
    assert chw.shape == (3, 64, 64) and chw.dtype == np.float32 and chw.flags.c_contiguous
    assert chw[1, 20, 5] == pytest.approx(200 / 255) and chw[0, 0, 0] == pytest.approx(114 / 255)


def test_letterbox_keeps_rgb_channel_order():
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    chw, _ = letterbox(rgb, 40)
    assert chw[0].min() == 1.0 and chw[1].max() == 0.0 and chw[2].max() == 0.0


def test_unletterbox_hand_computed_and_clipped():
    # h=100, w=50 into 64: ratio 0.64, 16 px of padding on the left.
    out = unletterbox_boxes(
        np.array([[16.0, 10.0, 48.0, 64.0], [0.0, -5.0, 70.0, 80.0]]), 0.64, (16, 0), (100, 50)
    )
    np.testing.assert_allclose(out[0], [0.0, 15.625, 50.0, 100.0])
    np.testing.assert_allclose(out[1], [0.0, 0.0, 50.0, 100.0])  # clipped to the image


def test_round_trip_through_the_plan_is_exact():
    box = plan((274, 301), 256)
    orig = np.array([[10.0, 20.0, 110.5, 200.0], [0.0, 0.0, 301.0, 274.0]])
    rx, ry = box.ratio
    fwd = orig * [rx, ry, rx, ry] + [box.pad[0], box.pad[1]] * 2
    back = unletterbox_boxes(fwd, box.ratio, box.pad, box.orig_shape)
    np.testing.assert_allclose(back, orig, atol=1e-9)


def test_letterbox_writes_into_a_batch_slot():
    rgb = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    batch = np.zeros((2, 3, 64, 64), np.float32)
    expected, box = letterbox(rgb, 64)
    got, box2 = letterbox(rgb, 64, out=batch[1])
    assert np.shares_memory(got, batch)
    np.testing.assert_array_equal(batch[1], expected)
    assert box == box2 and not batch[0].any()
