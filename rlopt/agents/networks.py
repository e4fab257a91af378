"""Networks: MLP trunks and policy/value heads. Layer initialisation lives here and only here."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from rlopt.optim.proximity import gaussian_log_prob, tanh_gaussian_log_prob

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def layer_init(layer: nn.Linear, gain: float, orthogonal: bool = True) -> nn.Linear:
    """Orthogonal weights with `gain` and zero bias (CleanRL/SB3 convention); default torch init otherwise."""
    if orthogonal:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


def mlp(
    in_dim: int,
    out_dim: int,
    hidden: tuple[int, ...],
    activation: str = "tanh",
    orthogonal: bool = True,
    out_gain: float = 1.0,
) -> nn.Sequential:
    """Fully connected net: in -> hidden... -> out, activation between layers, linear output."""
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers += [layer_init(nn.Linear(last, width), math.sqrt(2), orthogonal), ACTIVATIONS[activation]()]
        last = width
    layers.append(layer_init(nn.Linear(last, out_dim), out_gain, orthogonal))
    return nn.Sequential(*layers)


class GaussianActor(nn.Module):
    """Diagonal Gaussian policy with a state-independent log-std (on-policy agents)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        orthogonal: bool = True,
        log_std_init: float = 0.0,
    ):
        super().__init__()
        self.mean_net = mlp(obs_dim, act_dim, hidden, activation, orthogonal, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """obs [B, obs_dim] -> (mean [B, A], log_std [B, A])."""
        mean = self.mean_net(obs)
        return mean, self.log_std.expand_as(mean)

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Stochastic action and its log-prob: ([B, A], [B])."""
        mean, log_std = self(obs)
        action = mean + torch.exp(log_std) * torch.randn_like(mean)
        return action, gaussian_log_prob(action, mean, log_std)


class ValueNet(nn.Module):
    """State-value function V(s): [B, obs_dim] -> [B]."""

    def __init__(
        self, obs_dim: int, hidden: tuple[int, ...] = (64, 64), activation: str = "tanh", orthogonal: bool = True
    ):
        super().__init__()
        self.net = mlp(obs_dim, 1, hidden, activation, orthogonal, out_gain=1.0)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs).squeeze(-1)


class TanhGaussianActor(nn.Module):
    """Squashed Gaussian policy a = center + scale * tanh(u), u ~ N(mu(s), sigma(s)) (SAC family).

    `log_std_mode="tanh"` maps the raw log-std into [min, max] through tanh (CleanRL SAC);
    `"clip"` clamps it (SAC-v1 / MDPO-off).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: Tensor,
        action_high: Tensor,
        hidden: tuple[int, ...] = (256, 256),
        log_std_range: tuple[float, float] = (-5.0, 2.0),
        log_std_mode: str = "tanh",
    ):
        super().__init__()
        self.trunk = mlp(obs_dim, 2 * act_dim, hidden, "relu", orthogonal=False)
        self.log_std_min, self.log_std_max = log_std_range
        self.log_std_mode = log_std_mode
        self.register_buffer("center", (action_high + action_low) / 2.0)
        self.register_buffer("scale", (action_high - action_low) / 2.0)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """obs [B, obs_dim] -> (mean [B, A], log_std [B, A]) of the pre-tanh Gaussian."""
        mean, raw = self.trunk(obs).chunk(2, dim=-1)
        if self.log_std_mode == "tanh":
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1.0)
        else:
            log_std = raw.clamp(self.log_std_min, self.log_std_max)
        return mean, log_std

    def squash(self, u: Tensor) -> Tensor:
        """Pre-tanh sample -> env action."""
        return self.center + self.scale * torch.tanh(u)

    def log_prob_pre_tanh(self, u: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
        """log pi(center + scale tanh(u)) via the change of variables: [B, A] -> [B]."""
        return tanh_gaussian_log_prob(u, mean, log_std, self.scale)

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Reparameterised draw: (env action, log-prob, pre-tanh u, mean, log_std)."""
        mean, log_std = self(obs)
        u = mean + torch.exp(log_std) * torch.randn_like(mean)
        return self.squash(u), self.log_prob_pre_tanh(u, mean, log_std), u, mean, log_std

    def deterministic(self, obs: Tensor) -> Tensor:
        return self.squash(self(obs)[0])

    def numpy_sampler(self):
        """A NumPy twin of `sample` for acting on CPU: obs [N, O] (, noise [N, A]) -> env actions [N, A].

        It reads views of the current weights (no copy, so it stays current as they train; build it
        after the optimiser has flattened them) and costs a few microseconds, not ~30 torch dispatches.
        """
        layers = [m for m in self.trunk if isinstance(m, nn.Linear)]
        weights = [m.weight.detach().numpy() for m in layers]
        biases = [m.bias.detach().numpy() for m in layers]
        center, scale = self.center.numpy(), self.scale.numpy()
        act_dim = center.shape[-1]
        low, high, mode = self.log_std_min, self.log_std_max, self.log_std_mode

        def sample(obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
            x = obs
            for i, (w, b) in enumerate(zip(weights, biases)):
                x = np.matmul(x, w.T)
                x += b
                if i < len(weights) - 1:
                    np.maximum(x, 0.0, out=x)
            mean, raw = x[..., :act_dim], x[..., act_dim:]  # np.split costs 10x more
            if mode == "tanh":
                log_std = low + 0.5 * (high - low) * (np.tanh(raw) + 1.0)
            else:
                log_std = np.clip(raw, low, high)
            if noise is None:
                noise = np.random.standard_normal(mean.shape).astype(np.float32)
            return center + scale * np.tanh(mean + np.exp(log_std) * noise)

        return sample


class EnsembleMLP(nn.Module):
    """`n` independent MLPs evaluated together with batched matmuls: [B, in] or [n, B, in] -> [n, B, out].

    Used for twin critics: one batched matmul per layer instead of two, and the actor loss can
    read Q through detached weights (`detach=True`) so no critic weight-gradients are computed.
    Each member is initialised like `nn.Linear` (PyTorch default init).
    """

    def __init__(self, n: int, in_dim: int, out_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        dims = (in_dim, *hidden, out_dim)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(n, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, fan_out).uniform_(-bound, bound)))
        self.n = n

    def forward(self, x: Tensor, detach: bool = False) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if detach:
                w, b = w.detach(), b.detach()
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.relu(x)
        return x


class TwinQ(nn.Module):
    """Two Q-functions Q_j(s, a) as one ensemble: (obs [B, O], act [B, A]) -> [2, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256), n: int = 2):
        super().__init__()
        self.net = EnsembleMLP(n, obs_dim + act_dim, 1, hidden)

    def forward(self, obs: Tensor, act: Tensor, detach: bool = False) -> Tensor:
        return self.net(torch.cat([obs, act], dim=-1), detach=detach).squeeze(-1)


class NumpyMLP:
    """A NumPy snapshot of one or more same-shaped `mlp`s, evaluated together: x [N, in] -> [K, N, out].

    Acting costs a few microseconds per env step this way, not a few dozen torch dispatches; the
    actor and the critic of an on-policy agent go through one stacked matmul per layer (outputs
    are zero-padded to the widest net). Take a fresh snapshot whenever the weights change.
    """

    def __init__(self, *nets: nn.Sequential):
        stacks = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        kinds = [[type(m) for m in net if not isinstance(m, nn.Linear)] for net in nets]
        widths = [[m.out_features for m in layers[:-1]] for layers in stacks]
        if any(k != kinds[0] for k in kinds) or any(w != widths[0] for w in widths):
            raise ValueError("stacked nets need the same hidden widths and activations")
        self.layers: list[tuple[np.ndarray, np.ndarray, str | None]] = []
        for depth in range(len(stacks[0])):
            linears = [layers[depth] for layers in stacks]
            width = max(m.out_features for m in linears)
            weight = np.zeros((len(nets), linears[0].in_features, width))
            bias = np.zeros((len(nets), 1, width))
            for k, m in enumerate(linears):
                weight[k, :, : m.out_features] = m.weight.detach().cpu().numpy().T
                bias[k, 0, : m.out_features] = m.bias.detach().cpu().numpy()
            act = None
            if depth < len(kinds[0]):
                act = "tanh" if kinds[0][depth] is nn.Tanh else "relu"
            self.layers.append((weight, bias, act))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for weight, bias, act in self.layers:
            x = np.matmul(x, weight)
            x += bias
            if act == "tanh":
                np.tanh(x, out=x)
            elif act == "relu":
                np.maximum(x, 0.0, out=x)
        return x
