"""Hand-written forward/backward for tanh MLPs: the CPU fast path of the on-policy updates.

A PPO minibatch is 64 samples through two 64-64 nets, so autograd's per-op dispatch (not the
arithmetic) dominates its cost. These functions do the same computation in about a third of the
tensor ops and write parameter gradients straight into the (flat) `.grad` buffers. They are
tested to equal autograd (tests/test_baselines.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def linear_layers(net: nn.Sequential) -> list[nn.Linear]:
    """The Linear layers of an `mlp`; raises unless every hidden activation is tanh."""
    modules = list(net)
    layers = [m for m in modules if isinstance(m, nn.Linear)]
    activations = [m for m in modules if not isinstance(m, nn.Linear)]
    if len(activations) != len(layers) - 1 or not all(isinstance(m, nn.Tanh) for m in activations):
        raise ValueError("the fused update needs an MLP with tanh activations")
    return layers


def tanh_mlp_forward(x: Tensor, layers: list[nn.Linear]) -> tuple[Tensor, list[Tensor]]:
    """Output [B, out] and the input of every layer (kept for the backward pass)."""
    inputs = []
    for i, layer in enumerate(layers):
        inputs.append(x)
        x = torch.addmm(layer.bias, x, layer.weight.t())
        if i < len(layers) - 1:
            x = torch.tanh(x)
    return x.detach(), inputs


@torch.no_grad()
def tanh_mlp_backward(layers: list[nn.Linear], inputs: list[Tensor], grad_out: Tensor) -> None:
    """Overwrite each layer's weight/bias `.grad` with d loss / d param, given d loss / d output [B, out]."""
    grad = grad_out
    for k in range(len(layers) - 1, -1, -1):
        layer, x = layers[k], inputs[k]
        torch.mm(grad.t(), x, out=layer.weight.grad)
        torch.sum(grad, 0, out=layer.bias.grad)
        if k > 0:  # x = tanh(pre): d pre = d x * (1 - x^2)
            grad = torch.mm(grad, layer.weight)
            grad = grad.addcmul_(grad * x, x, value=-1.0)


# ReLU nets of the off-policy agents. Weights are taken in matmul layout: [in, out] for a single
# net (pass `linear.weight.t()`), [n, in, out] for an `EnsembleMLP`, whose members run as one bmm.


def _affine(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    return torch.baddbmm(b, x, w) if w.dim() == 3 else torch.addmm(b, x, w)


def relu_mlp_forward(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Output of a ReLU MLP (linear last layer) and the input of every layer, for `relu_mlp_backward`."""
    inputs = []
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        inputs.append(x)
        x = _affine(x, w, b)
        if i < last:
            x = torch.relu_(x)
    return x, inputs


@torch.no_grad()
def relu_mlp_backward(
    weights: list[Tensor],
    inputs: list[Tensor],
    grad_out: Tensor,
    weight_grads: list[Tensor] | None = None,
    bias_grads: list[Tensor] | None = None,
    input_grad: bool = False,
) -> Tensor | None:
    """Backward of `relu_mlp_forward` given d loss / d output.

    Writes (overwrites) d loss / d weight into `weight_grads` (in the parameters' own layout:
    [out, in] for a Linear, [n, in, out] for an ensemble) and d loss / d bias into `bias_grads`,
    when given; returns d loss / d input when `input_grad`.
    """
    grad = grad_out
    for k in range(len(weights) - 1, -1, -1):
        w, x = weights[k], inputs[k]
        if weight_grads is not None:
            if w.dim() == 3:
                torch.bmm(x.transpose(1, 2), grad, out=weight_grads[k])
                torch.sum(grad, 1, keepdim=True, out=bias_grads[k])
            else:
                torch.mm(grad.t(), x, out=weight_grads[k])
                torch.sum(grad, 0, out=bias_grads[k])
        if k > 0:  # x = relu(pre): pass the gradient where x > 0
            grad = torch.ops.aten.threshold_backward(torch.matmul(grad, w.transpose(-1, -2)), x, 0.0)
        elif input_grad:
            return torch.matmul(grad, w.transpose(-1, -2))
    return None
