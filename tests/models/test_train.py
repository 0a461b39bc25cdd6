"""Training pieces: target assignment, CIoU, augmentation, schedule, a short real training
run on generated images, and the training-time COCO evaluation."""

import math

import numpy as np
import pytest
import torch

from bench.data.synthetic import generate
from bench.errors import InputDataError
from bench.models.evaluate import evaluate, predict
from bench.models.loss import DetectionLoss, assign_level, bbox_ciou
from bench.models.train import ModelEma, TrainConfig, learning_rate, train_on
from bench.models.train_data import (
    Augment,
    TrainSet,
    image_targets,
    load_train_set,
    make_batch,
    open_split,
)
from bench.models.yolov7 import build_model

torch.set_num_threads(1)
STILL = Augment(flip=0.0, scale=0.0, translate=0.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("shapes"), seed=3, n_train=8, n_eval=4, progress=False)


def test_assignment_uses_anchor_ratio_and_two_neighbour_cells():
    anchors = torch.tensor([[1.0, 1.0], [2.0, 2.0], [10.0, 10.0]])
    # One target at grid (5.3, 6.7) of a 10x10 level, 1.5 x 1.5 cells: anchors 0 and 1 match
    # (ratio < 4), anchor 2 does not (ratio 6.7).
    t = torch.tensor([[0, 2, 0.53, 0.67, 0.15, 0.15]])
    lt = assign_level(t, anchors, 10, 10, anchor_t=4.0)
    cells = sorted(set(zip(lt.gx.tolist(), lt.gy.tolist())))
    assert cells == [(4, 6), (5, 6), (5, 7)]  # own cell, left (x frac .3), below (y frac .7)
    assert sorted(lt.anchor.tolist()) == [0, 0, 0, 1, 1, 1]
    assert set(lt.cls.tolist()) == {2}
    own = (lt.gx == 5) & (lt.gy == 6)
    torch.testing.assert_close(lt.box[own][0], torch.tensor([0.3, 0.7, 1.5, 1.5]))


def test_assignment_skips_neighbours_at_the_border():
    t = torch.tensor([[0, 0, 0.03, 0.03, 0.1, 0.1]])  # grid (0.3, 0.3): no cell left/above
    lt = assign_level(t, torch.tensor([[1.0, 1.0]]), 10, 10, anchor_t=4.0)
    assert list(zip(lt.gx.tolist(), lt.gy.tolist())) == [(0, 0)]


def test_ciou_values():
    a = torch.tensor([[5.0, 5.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[5.0, 5.0, 2.0, 2.0], [4.0, 0.0, 2.0, 2.0]])
    ciou = bbox_ciou(a, b)
    assert ciou[0] == pytest.approx(1.0, abs=1e-5)
    # Disjoint equal boxes: IoU 0, centre distance 16 over hull diagonal 6^2 + 2^2 = 40.
    assert ciou[1] == pytest.approx(-16 / 40, abs=1e-5)


def test_loss_is_finite_without_targets():
    model = build_model("yolov7-tiny", num_classes=2, width=0.25).train()
    loss = DetectionLoss(model.head, 64)
    total, parts = loss(model(torch.zeros(1, 3, 64, 64)), torch.zeros(0, 6))
    assert torch.isfinite(total) and parts[0] == 0 and parts[2] == 0 and parts[1] > 0


def _square_set() -> TrainSet:
    image = np.full((1, 64, 64, 3), 114, np.uint8)
    image[0, 10:20, 4:14] = 255
    return TrainSet(image, (np.array([[1, 4, 10, 14, 20]], np.float32),), 64)


def test_flip_moves_pixels_and_boxes_together():
    images, targets = make_batch(_square_set(), np.array([0]), np.random.default_rng(0),
                                 Augment(flip=1.0, scale=0.0, translate=0.0))
    torch.testing.assert_close(targets[0], torch.tensor([0, 1, 55 / 64, 15 / 64, 10 / 64, 10 / 64]))
    white = (images[0, 0] > 0.9).nonzero()
    assert white[:, 1].min() == 50 and white[:, 1].max() == 59  # columns 64-14 .. 64-4-1


def test_zoom_and_shift_move_boxes_with_pixels():
    rng = np.random.default_rng(5)
    images, targets = make_batch(_square_set(), np.array([0]), rng, Augment(0.0, 0.3, 0.2))
    _, _, cx, cy, w, h = (targets[0] * torch.tensor([1, 1, 64, 64, 64, 64])).tolist()
    white = (images[0, 0] > 0.75).nonzero().float()
    assert abs(white[:, 1].mean() - (cx - 0.5)) < 1.0 and abs(white[:, 0].mean() - (cy - 0.5)) < 1.0
    assert abs((white[:, 1].max() - white[:, 1].min() + 1) - w) < 1.5


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(iterations=100, warmup=10, lr=1e-3, final_lr_ratio=0.01)
    rates = [learning_rate(s, cfg) for s in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] == pytest.approx(1e-5, rel=0.05)


def test_ema_ramps_towards_the_model():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ModelEma(model, decay=0.9, tau=1.0)
    torch.nn.init.ones_(model.weight)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1))
    assert ema.ema.weight.item() == pytest.approx(1 - d)


def test_loss_decreases_over_forty_steps(dataset):
    # Twenty steps were too few to tell on every host: the last five ended at 0.815 of the
    # first five on a Xeon with AMX (CPU kernels round differently per ISA), above the
    # bound; forty gave 0.66 there.
    data = load_train_set(open_split(dataset, "train"), 96)
    cfg = TrainConfig(width=0.25, imgsz=96, batch=8, iterations=40, warmup=1, lr=2e-3,
                      threads=1, log_every=1, augment=STILL)
    result = train_on(data, 8, cfg)
    losses = [loss for _, loss in result.loss_log]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert result.epochs == pytest.approx(40.0) and not result.model.training


def test_training_is_deterministic(dataset):
    data = load_train_set(open_split(dataset, "train"), 64)
    cfg = TrainConfig(width=0.25, imgsz=64, batch=4, iterations=3, warmup=1, threads=1)
    a, b = train_on(data, 8, cfg), train_on(data, 8, cfg)
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name


def test_train_set_boxes_follow_the_letterbox(dataset):
    split = open_split(dataset, "train")
    image_id = split.image_ids[0]
    boxes, classes = image_targets(split, image_id)
    info = split.image_info(image_id)
    data = load_train_set(split, 128)
    scale = 128 / max(info["width"], info["height"])
    assert data.images.shape == (8, 128, 128, 3) and len(data.labels[0]) == len(boxes) > 0
    widths = data.labels[0][:, 3] - data.labels[0][:, 1]
    np.testing.assert_allclose(widths, boxes[:, 2] * scale, rtol=0.02)
    assert list(split.class_to_category) == sorted(split.class_to_category)
    assert set(data.labels[0][:, 0].astype(int)) == set(classes.tolist())


def test_not_coco_is_an_input_data_error(tmp_path):
    with pytest.raises(InputDataError):
        open_split(tmp_path, "train")


def test_perfect_model_scores_map_one(dataset):
    """A stand-in 'model' that outputs the ground truth in the --grid layout."""
    split = open_split(dataset, "val")
    data = load_train_set(split, 128)

    class Oracle(torch.nn.Module):
        def forward(self, x):
            rows = []
            for labels in data.labels:
                xyxy = torch.from_numpy(labels[:, 1:])
                one_hot = torch.nn.functional.one_hot(torch.from_numpy(labels[:, 0]).long(), 8)
                rows.append(torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2],
                                       torch.ones(len(labels), 1), one_hot.float()], 1))
            return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)

    result = evaluate(Oracle(), split, 128)
    assert result.map > 0.95 and result.num_images == 4


def test_predictions_use_dataset_ids_and_original_pixels(dataset):
    split = open_split(dataset, "val")
    model = build_model("yolov7-tiny", num_classes=8, width=0.25)
    dets = predict(model, split, 64, max_det=5)
    assert dets and {d["category_id"] for d in dets} <= set(split.class_to_category)
    width = {i: split.image_info(i)["width"] for i in split.image_ids}
    assert all(d["bbox"][0] + d["bbox"][2] <= width[d["image_id"]] + 1e-3 for d in dets)
    assert max(sum(d["image_id"] == i for d in dets) for i in split.image_ids) <= 5
