"""Batches (shifted labels, masks, cached rows), data order, micro-batches, truncation, the
loss-path choice and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kdlang.runtime.distributed import Dist
from kdlang.runtime.train import checkpoint
from kdlang.runtime.train.examples import (
    IGNORE,
    DataOrder,
    Example,
    collate,
    collate_pairs,
    micro_batches,
    truncate,
)
from kdlang.runtime.train.models import loss_path

from tests.runtime.train.support import loss, train_node


def test_collate_right_pads_and_labels_only_target_tokens():
    a = Example([1, 2, 3], [4, 5])
    b = Example([6], [7, 8, 9, 10])
    batch = collate([a, b], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert batch.labels.tolist() == [[IGNORE, IGNORE, 4, 5], [7, 8, 9, 10]]
    c = Example([1], [2])
    padded = collate([c, a], pad_id=0)
    assert padded.input_ids[0].tolist() == [1, 2, 0, 0, 0]
    assert padded.attention_mask[0].tolist() == [1, 1, 0, 0, 0]
    assert padded.labels[0].tolist() == [2, IGNORE, IGNORE, IGNORE]
    assert padded.tokens == 3 and torch.equal(padded.kd_labels, padded.labels)


def test_cached_rows_line_up_with_their_target_tokens():
    ids = np.array([[4, 1], [5, 2]], np.int32)
    lps = np.array([[-0.1, -2.5], [-0.2, -1.9]], np.float32)
    example = Example([1, 2, 3], [4, 5, 99], ids, lps)  # 99 (EOS) has no cached row
    batch = collate([example], pad_id=0, kd_everywhere=False)
    assert batch.labels.tolist() == [[IGNORE, IGNORE, 4, 5, 99]]
    assert batch.kd_labels.tolist() == [[IGNORE, IGNORE, 4, 5, IGNORE]]
    assert batch.topk_ids[0, 2].tolist() == [4, 1] and batch.topk_ids[0, 3].tolist() == [5, 2]
    assert batch.topk_logprobs[0, 3].tolist() == pytest.approx([-0.2, -1.9])
    assert len(set(batch.topk_ids[0, 0].tolist())) == 2  # filler rows have distinct ids


def test_pairs_put_chosen_before_rejected():
    from kdlang.runtime.train.examples import Pair

    batch = collate_pairs([Pair([1], [2], [3, 4]), Pair([5, 6], [7], [8])], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 0], [5, 6, 7], [1, 3, 4], [5, 6, 8]]
    assert batch.labels.tolist() == [[2, IGNORE], [IGNORE, 7], [3, 4], [IGNORE, 8]]


def test_truncation_keeps_the_prompt_and_the_start_of_the_target():
    assert truncate([1, 2], [3, 4, 5], 4) == ([1, 2], [3, 4])
    assert truncate(list(range(10)), [10, 11, 12], 8) == ([6, 7, 8, 9], [10, 11, 12])
    assert truncate([1, 2], [3], 8) == ([1, 2], [3])


def test_data_order_is_a_function_of_the_step():
    order = DataOrder(rows=10, batch=4, seed=3)
    assert order.steps_per_epoch == 3
    epoch = [order.step_rows(s) for s in range(3)]
    assert sorted(r for rows in epoch for r in rows) == list(range(10)) and len(epoch[2]) == 2
    assert order.step_rows(3) != epoch[0] or order.step_rows(4) != epoch[1]
    assert DataOrder(rows=10, batch=4, seed=3).step_rows(7) == order.step_rows(7)
    assert order.position(7) == {"epoch": 2, "batch_in_epoch": 1}


def test_micro_batches_split_evenly():
    assert micro_batches(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert micro_batches([0], 4) == [[0]]


def test_loss_path_is_the_plans_choice():
    kl = [loss("forward_kl", 1.0)]
    big = train_node(kl, batch=8, max_length=2048)
    assert loss_path(big, 128_256)[0] == "fused_linear"
    assert loss_path(train_node(kl, batch=2, max_length=256), 128_256)[0] == "materialized"
    assert loss_path(train_node([loss("sft", 1.0)], batch=8, max_length=2048), 128_256)[0] == (
        "materialized"
    )
    forced = train_node(kl, batch=2, max_length=256, loss_path="fused_linear")
    assert loss_path(forced, 320) == ("fused_linear", "set in the recipe")


def test_checkpoints_commit_atomically_and_keep_the_latest(tmp_path):
    dist = Dist()
    assert checkpoint.load_latest(tmp_path, 0) is None
    checkpoint.save(tmp_path, 4, {"data": 1}, {"trainable": torch.ones(2)}, dist)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    checkpoint.save(tmp_path, 8, {"data": 2}, {"trainable": torch.zeros(2)}, dist)
    (tmp_path / "ckpt-00000012.tmp").mkdir()  # a crash while writing the next one
    saved = checkpoint.load_latest(tmp_path, 0)
    assert saved.step == 8 and saved.state["data"] == 2 and saved.state["world"] == 1
    assert torch.equal(saved.weights()["trainable"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000008", "ckpt-00000012.tmp"]
    torch.manual_seed(0)
    checkpoint.set_rng_state(saved.rng)
    assert torch.equal(torch.rand(3), expected)
    # written by one process, read by rank 1 of two: its generators are seeded, not restored
    assert checkpoint.load_latest(tmp_path, 1, world=2).rng is None
    checkpoint.seed_rng(7, 8, 1)
    first = torch.rand(3)
    checkpoint.seed_rng(7, 8, 1)
    assert torch.equal(torch.rand(3), first)
    checkpoint.seed_rng(7, 8, 0)
    assert not torch.equal(torch.rand(3), first)
