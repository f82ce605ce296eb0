"""StyleGAN2 building blocks in the widely used "rosinality" formulation.

The official SGPN release (and its checkpoint) uses these layers, so parameter names, shapes
and initialisation follow that formulation exactly: equalised learning rate (weights stored as
N(0, 1), scaled at run time by 1/sqrt(fan_in)), fused leaky ReLU (bias, slope 0.2, gain
sqrt(2)), [1, 3, 3, 1] blur kernels kept as ``kernel`` buffers, and weight-modulated
convolutions.

Why written here rather than imported: no maintained library ships these layers with the
names the released checkpoint needs, and the release's own resampling runs through a generic
pure-PyTorch ``upfirdn2d`` (zero insertion, padding and a one-channel convolution over a
reshaped batch) that takes about 11 s for one 512 x 512 image on a 2-core CPU. Here every
resampling is the single native op it amounts to for a 2x factor with an even-length kernel:

* blur            -> depthwise ``conv2d`` (``groups=C``)
* blur + stride 2 -> blur, then a stride-2 ``conv2d``
* 2x upsample     -> depthwise ``conv_transpose2d`` with stride 2
* modulated conv  -> one plain convolution: with the modulated weight for a single image,
                     with the shared weight on style-scaled activations for a batch

All of them compute the same sums as ``upfirdn2d`` (reproducing the release's outputs to
about 1e-6), and they follow the input's memory format, so a ``channels_last`` input runs
through oneDNN's fastest CPU kernels.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: The gain of the fused leaky ReLU, which keeps activations at unit variance.
ACTIVATION_GAIN = math.sqrt(2.0)
NEGATIVE_SLOPE = 0.2
#: The resampling filter of StyleGAN2 (binomial, separable).
DEFAULT_BLUR = (1, 3, 3, 1)


def make_blur_kernel(taps: Sequence[float] = DEFAULT_BLUR, gain: float = 1.0) -> torch.Tensor:
    """The 2-D blur kernel: outer product of ``taps``, normalised to sum ``gain``."""
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.dim() == 1:
        k = k[None, :] * k[:, None]
    if k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"blur taps must be 1-D or a square 2-D kernel, got shape {tuple(k.shape)}")
    return k / k.sum() * gain


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will track an op on ``tensors`` (else in-place shortcuts are safe)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def fused_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor, negative_slope: float = NEGATIVE_SLOPE,
    scale: float = ACTIVATION_GAIN, inplace: bool = False,
) -> torch.Tensor:
    """``leaky_relu(x + bias) * scale``, with ``bias`` along dim 1.

    Without autograd the three element-wise passes run in place on one buffer (``x`` itself
    when ``inplace``), which matters on CPU: at 512 x 512 each fresh buffer costs about as much
    as the arithmetic.
    """
    bias = bias.view(1, -1, *([1] * (x.dim() - 2)))
    if needs_grad(x, bias):
        return F.leaky_relu(x + bias, negative_slope) * scale
    out = x.add_(bias) if inplace else x + bias
    return F.leaky_relu_(out, negative_slope).mul_(scale)


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias, leaky ReLU (0.2) and gain sqrt(2).

    ``inplace=True`` lets inference overwrite the input; only for inputs nothing else reads.
    """

    def __init__(self, channels: int, negative_slope: float = NEGATIVE_SLOPE,
                 scale: float = ACTIVATION_GAIN, inplace: bool = False):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.negative_slope = negative_slope
        self.scale = scale
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale, self.inplace)


class PixelNorm(nn.Module):
    """Normalise each vector to unit root-mean-square along dim 1 (StyleGAN's latent norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate.

    The weight is stored divided by ``lr_mul`` and scaled by ``lr_mul / sqrt(in_dim)`` at run
    time; the bias is scaled by ``lr_mul``. With ``activation=True`` a fused leaky ReLU follows.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.scale
        if self.activation:
            out = F.linear(x, weight)
            bias = self.bias * self.lr_mul if self.bias is not None else out.new_zeros(out.shape[1])
            return fused_leaky_relu(out, bias, inplace=True)
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        out_dim, in_dim = self.weight.shape
        return f"{in_dim}, {out_dim}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate (weight scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride,
                        padding=self.padding)

    def extra_repr(self) -> str:
        out_c, in_c, k, _ = self.weight.shape
        return f"{in_c}, {out_c}, {k}, stride={self.stride}, padding={self.padding}"


class Blur(nn.Module):
    """Depthwise FIR filter with padding ``(pad0, pad1)`` on both axes (``upfirdn2d`` with
    up = down = 1). ``upsample_factor`` multiplies the kernel by factor**2, as needed after a
    transposed convolution that spread each input pixel over factor**2 outputs."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, gain=upsample_factor**2))
        self.pad = (int(pad[0]), int(pad[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        weight = torch.flip(self.kernel, [0, 1]).to(x.dtype).expand(channels, 1, *self.kernel.shape)
        p0, p1 = self.pad
        if p0 == p1 and p0 >= 0:
            return F.conv2d(x, weight, padding=p0, groups=channels)
        return F.conv2d(F.pad(x, (p0, p1, p0, p1)), weight, groups=channels)

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}, pad={self.pad}"


class Upsample(nn.Module):
    """2x upsampling with the blur kernel (``upfirdn2d`` with up = 2), as one depthwise
    stride-2 transposed convolution. The output is exactly twice the input size."""

    def __init__(self, taps: Sequence[float] = DEFAULT_BLUR, factor: int = 2):
        super().__init__()
        kernel = make_blur_kernel(taps, gain=factor**2)
        if factor != 2 or kernel.shape[0] % 2:
            raise ValueError("Upsample supports factor 2 with an even number of taps, "
                             f"got factor {factor} and {kernel.shape[0]} taps")
        self.register_buffer("kernel", kernel)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        taps = self.kernel.shape[0]
        weight = self.kernel.to(x.dtype).expand(channels, 1, taps, taps)
        return F.conv_transpose2d(x, weight, stride=2, padding=(taps - 2) // 2, groups=channels)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's weight-modulated convolution.

    The style vector scales the weight per input channel (an ``EqualLinear`` whose bias starts
    at 1) and demodulation rescales each output filter to unit norm (eps 1e-8). ``upsample``
    uses a stride-2 transposed convolution followed by a blur, as the release does.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1),
                             upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            return self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        return F.conv2d(x, weight, padding=self.padding)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channels = x.shape[:2]
        if in_channels != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, "
                             f"got {in_channels}")
        style = self.modulation(style)  # (B, in): per-input-channel scales
        weight = self.scale * self.weight[0]  # (out, in, k, k)
        if batch == 1:  # modulate (and demodulate) the weight itself: one plain convolution
            weight = weight * style.view(1, -1, 1, 1)
            if self.demodulate:
                weight = weight * torch.rsqrt(weight.pow(2).sum([1, 2, 3]) + 1e-8).view(-1, 1, 1, 1)
            return self._conv(x, weight)
        # A batch: scale the activations instead of the weights, run one shared convolution and
        # apply the demodulation to its output. Same sums as per-sample weights, regrouped.
        out = self._conv(x * style.view(batch, -1, 1, 1), weight)
        if self.demodulate:
            demod = torch.rsqrt(style.pow(2) @ weight.pow(2).sum([2, 3]).T + 1e-8)  # (B, out)
            out = out * demod.view(batch, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, {self.kernel_size}, "
                f"upsample={self.upsample}, demodulate={self.demodulate}")


class ConvLayer(nn.Sequential):
    """Equalised convolution, optionally blur + stride 2 first, optionally a fused leaky ReLU.

    As a ``Sequential`` so that its parameters are named like the release's
    (``0.kernel``, ``1.weight``, ``2.bias`` for a downsampling layer).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 downsample: bool = False, blur_kernel: Sequence[float] = DEFAULT_BLUR,
                 bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=stride,
                                  padding=padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels, inplace=True) if bias else ScaledLeakyReLU())
        super().__init__(*layers)


class ScaledLeakyReLU(nn.Module):
    """Leaky ReLU (0.2) times sqrt(2), for activated layers without a bias."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, NEGATIVE_SLOPE) * ACTIVATION_GAIN


class ConstantInput(nn.Module):
    """The decoder's learned 4x4 starting tensor, repeated over the batch."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.input.expand(batch_size, -1, -1, -1)
