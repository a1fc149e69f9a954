import math

import torch

from talkface.model.positional import PeriodicPositionalEncoding, periodic_encoding, sinusoid_table


def test_table_values_hand_computed():
    table = sinusoid_table(period=3, dim=4)  # frequencies 1 and 10000^(-1/2) = 0.01
    for t in range(3):
        want = [math.sin(t), math.cos(t), math.sin(0.01 * t), math.cos(0.01 * t)]
        torch.testing.assert_close(table[t], torch.tensor(want))
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_odd_width():
    table = sinusoid_table(period=5, dim=5)
    assert table.shape == (5, 5)
    freqs = [10000 ** (-k / 5) for k in (0, 2, 4)]
    want = [math.sin(2 * freqs[0]), math.cos(2 * freqs[0]), math.sin(2 * freqs[1]), math.cos(2 * freqs[1]),
            math.sin(2 * freqs[2])]
    torch.testing.assert_close(table[2], torch.tensor(want))


def test_periodic_for_any_length():
    pe = periodic_encoding(2000, period=30, dim=64)  # FaceFormer's table stops at 630 rows
    assert pe.shape == (2000, 64)
    torch.testing.assert_close(pe[30:], pe[:-30])
    assert not torch.allclose(pe[0], pe[1])


def test_module_offset_matches_full_sequence_and_dropout_only_in_training():
    ppe = PeriodicPositionalEncoding(8, period=4, dropout=0.5).eval()
    tokens = torch.randn(2, 11, 8)
    full = ppe(tokens)
    torch.testing.assert_close(full, tokens + periodic_encoding(11, 4, 8))
    for t in (0, 3, 4, 10):
        torch.testing.assert_close(ppe(tokens[:, t: t + 1], offset=t), full[:, t: t + 1])
    ppe.train()
    assert (ppe(tokens) == 0).any()
