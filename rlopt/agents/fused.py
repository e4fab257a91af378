"""Hand-written forward/backward passes: the CPU fast paths of the updates (tested equal to autograd).

On-policy: a PPO minibatch is 64 samples through two 64-64 tanh nets, so per-op dispatch, not
arithmetic, is the cost. `TanhMLP` runs those nets in NumPy (a few microseconds per op instead of
torch's ~10) on views of the very same parameter and gradient memory, and writes gradients straight
into the (flat) `.grad` buffers, which the torch optimiser then steps.

Off-policy: 256-256 ReLU nets on batches of 256 are matmul-bound; the torch helpers below avoid
autograd's extra work (weight-gradients nobody needs, separate passes that can share a matmul).
"""

from __future__ import annotations

import numpy as np
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


class TanhMLP:
    """NumPy views of a tanh `mlp`'s weights and gradients, with its forward and backward pass.

    Build it after the optimiser has flattened the parameters (the views must point at the final
    storage); in-place loads (`load_state_dict`) keep them valid. CPU float32 only.
    """

    def __init__(self, net: nn.Sequential):
        layers = linear_layers(net)
        if any(m.weight.grad is None or m.weight.device.type != "cpu" for m in layers):
            raise ValueError("TanhMLP needs CPU parameters whose .grad buffers exist (build the optimiser first)")
        self.weights = [m.weight.detach().numpy() for m in layers]  # [out, in]
        self.biases = [m.bias.detach().numpy() for m in layers]
        self.weight_grads = [m.weight.grad.numpy() for m in layers]
        self.bias_grads = [m.bias.grad.numpy() for m in layers]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Output [B, out] and the input of every layer (kept for `backward`)."""
        inputs = []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            inputs.append(x)
            x = np.matmul(x, w.T)
            x += b
            if i < last:
                np.tanh(x, out=x)
        return x, inputs

    def backward(self, inputs: list[np.ndarray], grad_out: np.ndarray) -> None:
        """Overwrite every weight/bias gradient with d loss / d param, given d loss / d output [B, out]."""
        grad = grad_out
        for k in range(len(self.weights) - 1, -1, -1):
            x = inputs[k]
            np.matmul(grad.T, x, out=self.weight_grads[k])
            np.sum(grad, 0, out=self.bias_grads[k])
            if k > 0:  # x = tanh(pre): d pre = d x * (1 - x^2)
                grad = np.matmul(grad, self.weights[k])
                grad -= grad * x * x


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
            grad = torch.ops.aten.threshold_backward(_times_transpose(grad, w), x, 0.0)
        elif input_grad:
            return _times_transpose(grad, w)
    return None


def _times_transpose(grad: Tensor, w: Tensor) -> Tensor:
    """grad @ w^T with bmm/mm directly (torch.matmul on 3-d operands adds four reshaping dispatches)."""
    if w.shape[-1] == 1:  # an outer product: a broadcast multiply, not a K = 1 matrix product
        return grad * w.transpose(-1, -2)
    return torch.bmm(grad, w.transpose(1, 2)) if w.dim() == 3 else torch.mm(grad, w.t())


@torch.no_grad()
def relu_ensemble_selected_input_grad(
    weights: list[Tensor], inputs: list[Tensor], member: Tensor, grad_out: Tensor, columns: slice = slice(None)
) -> Tensor:
    """d/dx_i of sum_i grad_out[i] * Q_{member[i]}(x_i) for an ensemble run by `relu_mlp_forward`.

    The actor loss of a twin-critic agent reads min_j Q_j, so each row's gradient flows through one
    member only; a dense ensemble backward would carry exact zeros through the others. Here each row
    goes back through its own member alone (rows grouped by member): half the work for two members.
    weights: [n, in, out] per layer; inputs: the [n, B, in] layer inputs from `relu_mlp_forward`;
    member: [B] indices; grad_out: [B]. Returns [B, len(columns)], the gradient of the selected
    input columns (e.g. the action part of [s, a]).
    """
    first = weights[0][:, columns, :]  # [n, in', out]: only the input columns asked for
    result = grad_out.new_empty(member.shape[0], first.shape[1])
    order = torch.argsort(member, stable=True)
    counts = torch.bincount(member, minlength=first.shape[0]).tolist()
    start = 0
    for j, count in enumerate(counts):
        if count == 0:
            continue
        rows = order[start : start + count]
        start += count
        grad = grad_out.index_select(0, rows).unsqueeze(1)  # [m, 1]: d loss / d output of member j
        for k in range(len(weights) - 1, 0, -1):
            grad = _times_transpose(grad, weights[k][j])  # weights[k][j]: [in, out]
            grad = torch.ops.aten.threshold_backward(grad, inputs[k][j].index_select(0, rows), 0.0)
        result.index_copy_(0, rows, torch.mm(grad, first[j].t()))
    return result
