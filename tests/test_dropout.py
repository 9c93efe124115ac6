import torch

from ada2i_fast.dropout import UniformDropout


def test_uniform_dropout_keeps_each_element_with_probability_one_minus_p():
    n, p = 1_000_000, 0.3
    torch.manual_seed(0)
    x = torch.ones(n, requires_grad=True)
    dropout = UniformDropout(p)
    out = dropout(x)
    kept = (out != 0).double().mean().item()
    # Six standard errors of a Bernoulli(1 - p) mean over n draws.
    assert abs(kept - (1 - p)) < 6 * (p * (1 - p) / n) ** 0.5
    torch.testing.assert_close(out.unique(), torch.tensor([0.0, 1 / (1 - p)]))
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())
    assert dropout.eval()(x) is x
