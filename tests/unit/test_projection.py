"""fsad.features.projection: cached tokens into the joint space, as faprompt's and devprompt's prompts read them."""

import torch

from fsad.features.projection import project_tokens


def test_tokens_are_projected_then_normalised_in_float32():
    tokens = torch.tensor([[[3.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)  # (1, 2, W=2)
    projection = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # (W, D=3)
    projected = project_tokens(tokens, projection)
    assert projected.shape == (1, 2, 3) and projected.dtype == torch.float32
    expected = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 2.0, 0.0]]]) / torch.tensor([[[1.0], [5.0**0.5]]])
    torch.testing.assert_close(projected, expected)


def test_the_projection_is_a_plain_matrix_product_for_any_leading_shape():
    generator = torch.Generator().manual_seed(0)
    tokens, projection = torch.randn(2, 3, 5, 8, generator=generator), torch.randn(8, 4, generator=generator)
    product = tokens @ projection
    assert torch.equal(project_tokens(tokens, projection), product / product.norm(dim=-1, keepdim=True))
