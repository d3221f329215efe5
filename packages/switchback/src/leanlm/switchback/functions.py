"""SwitchBack autograd functions: int8 forward and input-gradient matmuls, 16-bit weight gradient.

For X [N, D_in] (any leading dims are flattened), W [D_out, D_in], G = dL/dY [N, D_out]:

* forward      Y  = X W^T + b      int8: X row-wise, W global (or row-wise = per output channel)
* grad input   dX = G W            int8: G row-wise, W global (or per input channel)
* grad weight  dW = G^T X          in the input's dtype: its inner dimension is N = batch x tokens, so
                                   int8 noise would add up over many terms (the paper's reason)
* grad bias    db = sum_n G

Outputs and input gradients come back in X's dtype (fp32 or bf16; the original kernels forced fp16);
the weight gradient in W's dtype. ``StandardFunction`` has the same structure with plain matmuls.
"""

from __future__ import annotations

from typing import Any

import torch

from leanlm.core.kernels import int8


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def _weight_grad(g2: torch.Tensor, x2: torch.Tensor, w_dtype: torch.dtype) -> torch.Tensor:
    # 16-bit (input dtype) matmul, result in the weight's dtype for the optimizer
    return (g2.t() @ x2.to(g2.dtype)).to(w_dtype)


class SwitchBackGlobalFunction(torch.autograd.Function):
    """Row-wise X and G, one (global) scale for W. The default SwitchBack."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x2 = _flat(x)
        qx, sx = int8.quantize_rowwise(x2)
        qw, sw = int8.quantize_global(weight)
        out = int8.int8_matmul_global_dequantize(qx, qw.t(), sx, sw, bias, dtype=x.dtype)
        # One global scale serves W and W^T alike (quantize(W)^T == quantize(W^T)), so the backward pass
        # reuses this int8 W ([D_out, D_in] is already the [K, N] operand of G @ W) instead of
        # quantizing W^T again: one byte per weight kept, two passes over W saved.
        ctx.save_for_backward(x, qw, sw)
        ctx.w_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, qw, sw = ctx.saved_tensors
        g2 = _flat(grad_out).to(x.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            qg, sg = int8.quantize_rowwise(g2)
            grad_x = int8.int8_matmul_global_dequantize(qg, qw, sg, sw, dtype=x.dtype).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(g2, _flat(x), ctx.w_dtype)
        if ctx.needs_input_grad[2]:
            grad_b = g2.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b


class SwitchBackVectorwiseFunction(torch.autograd.Function):
    """Row-wise X and G; W per output channel in the forward pass, per input channel in the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x2 = _flat(x)
        qx, sx = int8.quantize_rowwise(x2)
        qw, sw = int8.quantize_rowwise(weight)  # one scale per output channel (row of W)
        out = int8.int8_matmul_rowwise_dequantize(qx, qw.t(), sx, sw, bias, dtype=x.dtype)
        ctx.save_for_backward(x, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        g2 = _flat(grad_out).to(x.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            qg, sg = int8.quantize_rowwise(g2)
            # dX = G W: the columns of W (input channels) are the output columns, so scale per column
            qwt, sw = int8.quantize_columnwise_transpose(weight)
            grad_x = int8.int8_matmul_rowwise_dequantize(qg, qwt.t(), sg, sw, dtype=x.dtype).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(g2, _flat(x), weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = g2.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b


class SwitchBackMemEfficientFunction(torch.autograd.Function):
    """Global SwitchBack that saves int8 X (and int8 W) instead of X: dW = G^T dequantize(X_int8)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x2 = _flat(x)
        qx, sx = int8.quantize_rowwise(x2)
        qw, sw = int8.quantize_global(weight)
        out = int8.int8_matmul_global_dequantize(qx, qw.t(), sx, sw, bias, dtype=x.dtype)
        # a quarter (fp32) or half (bf16) of the activation memory: the float X is not kept
        ctx.save_for_backward(qx, sx, qw, sw)
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        ctx.w_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        qx, sx, qw, sw = ctx.saved_tensors
        g2 = _flat(grad_out).to(ctx.x_dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            qg, sg = int8.quantize_rowwise(g2)
            grad_x = int8.int8_matmul_global_dequantize(qg, qw, sg, sw, dtype=ctx.x_dtype).reshape(
                ctx.x_shape
            )
        if ctx.needs_input_grad[1]:
            x_hat = int8.dequantize_rowwise(qx, sx, dtype=g2.dtype)
            grad_w = (g2.t() @ x_hat).to(ctx.w_dtype)
        if ctx.needs_input_grad[2]:
            grad_b = g2.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b


class StandardFunction(torch.autograd.Function):
    """The reference: SwitchBack's structure with every matmul in the input's dtype."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x2 = _flat(x)
        out = x2 @ weight.to(x.dtype).t()
        if bias is not None:
            out = out + bias.to(x.dtype)
        ctx.save_for_backward(x, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        g2 = _flat(grad_out).to(x.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (g2 @ weight.to(x.dtype)).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(g2, _flat(x), weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = g2.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b
