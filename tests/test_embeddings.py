import pytest
import torch

from dlbook.embeddings import mean_pool


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_mean_pool_checks_shapes_and_empty_rows():
    with pytest.raises(ValueError, match="batch, seq, dim"):
        mean_pool(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="attention_mask must be"):
        mean_pool(torch.zeros(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="keeps no token"):
        mean_pool(torch.zeros(2, 3, 4), torch.tensor([[1, 0, 0], [0, 0, 0]]))
