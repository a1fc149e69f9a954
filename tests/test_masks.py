import math

import torch

from talkface.model.masks import alibi_slopes, alignment_mask, biased_causal_mask

INF = float("-inf")


def test_slopes_four_heads_are_faceformers():
    assert alibi_slopes(4) == [0.25, 0.0625, 0.015625, 0.00390625]


def test_slopes_eight_heads_and_non_power_of_two():
    assert alibi_slopes(8) == [2.0 ** -(i + 1) for i in range(8)]
    # ALiBi's rule for 6 heads: the 4-head slopes, then slopes 1 and 3 of the 8-head list
    assert alibi_slopes(6) == [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]


def test_bias_hand_computed_period_two():
    mask = biased_causal_mask(4, period=2, num_queries=4)
    assert mask.shape == (4, 4, 4)
    s = 0.25  # head 0
    expected = torch.tensor([
        [0, INF, INF, INF],
        [0, 0, INF, INF],
        [-s, 0, 0, INF],
        [-s, -s, 0, 0],
    ])
    torch.testing.assert_close(mask[0], expected)
    torch.testing.assert_close(mask[3], expected * (0.00390625 / s))


def test_bias_brute_force_any_length():
    heads, period, length = 4, 5, 37
    mask = biased_causal_mask(heads, period, length)
    slopes = alibi_slopes(heads)
    want = torch.tensor([[[-slopes[h] * math.floor((i - j) / period) if j <= i else INF
                           for j in range(length)] for i in range(length)] for h in range(heads)])
    torch.testing.assert_close(mask, want)


def test_causality_no_future_and_zero_on_recent_period():
    mask = biased_causal_mask(4, period=30, num_queries=100)
    future = torch.triu(torch.ones(100, 100, dtype=torch.bool), diagonal=1)
    assert torch.isneginf(mask[:, future]).all()
    assert torch.isfinite(mask[:, ~future]).all()
    assert (mask[:, torch.arange(100), torch.arange(100)] == 0).all()
    # row 29: keys 0..29 lie within one period of the query, key 0 of row 30 one period back
    assert (mask[:, 29, :30] == 0).all() and (mask[:, 30, 0] < 0).all()


def test_step_rows_equal_full_rows_and_no_length_limit():
    full = biased_causal_mask(4, period=7, num_queries=2000)
    assert full.shape == (4, 2000, 2000)  # FaceFormer stops at 600
    for t in (0, 1, 599, 600, 1999):
        step = biased_causal_mask(4, period=7, num_queries=1, num_keys=t + 1, offset=t)
        torch.testing.assert_close(step[:, 0], full[:, t, : t + 1])


def test_alignment_diagonal_vocaset():
    blocked = alignment_mask(3, 3, 0)
    assert blocked.tolist() == [[False, True, True], [True, False, True], [True, True, False]]


def test_alignment_two_audio_frames_per_motion_frame_biwi():
    allowed = ~alignment_mask(3, 6, 2)
    assert allowed.int().tolist() == [
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1],
    ]


def test_alignment_k3_and_extra_audio_is_never_attended():
    allowed = ~alignment_mask(2, 8, 3)
    assert allowed.int().tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0, 0]]
