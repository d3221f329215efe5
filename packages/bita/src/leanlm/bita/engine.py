"""Forward engines for BiTA decoding: run ``[new context | root | candidates | mask groups]`` against
the cache, then keep only the accepted rows.

* ``FastEngine`` (LLaMA-family models: llama, mistral without sliding window, qwen2, qwen3): its
  own loop over the base model's layers with a **preallocated** KV buffer ``[L, 2, n_kv, cap, d]``
  laid out ``[prefix P | context | this step's tokens]``. Accepting copies only the accepted rows
  (one indexed copy for all layers). Attention of the step's tree rows is split in two parts,
  merged by their log-sum-exp: the whole context through the fused SDPA kernel with no mask, and
  the prefix plus the step's own tokens (P + q keys) with the tree mask. New context rows (the
  prompt, at prefill) use causal SDPA over the context alone: real tokens never see the prefix.
* ``HFEngine``: the HF decoder with a ``DynamicCache`` and one additive mask over every key, then
  an ``index_select`` of the whole cache per accepting step (the previous path; also the
  ``use_cache=False`` reference that recomputes the context every step).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
import torch.nn.functional as F

from leanlm.bita.model import BiTAModel, additive_mask
from leanlm.bita.trees import StepTree

FAST_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


def attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unmasked attention ``softmax(q k^T * scale) v`` and its log-sum-exp, [b, h, L, d] and [b, h, L] (fp32).

    Uses the fused kernels that return the log-sum-exp (CPU flash attention, CUDA memory-efficient
    attention); falls back to explicit math elsewhere or if the private op is missing.
    """
    try:
        if q.device.type == "cpu":
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, 0.0, False, scale=scale
            )
            return out, lse.float()
        if q.device.type == "cuda":
            out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
                q, k, v, None, True, 0.0, False, scale=scale
            )[:2]
            return out, lse[..., : q.shape[-2]].float()
    except (RuntimeError, AttributeError, TypeError):
        pass
    return attention_with_lse_reference(q, k, v, scale)


def attention_with_lse_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit ``softmax(q k^T * scale + mask) v`` and log-sum-exp (fp32 scores)."""
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask.float()
    lse = torch.logsumexp(s, dim=-1)
    out = torch.matmul(torch.exp(s - lse.unsqueeze(-1)), v.float())
    return out.to(q.dtype), lse


def merge_attention(
    o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor, lse2: torch.Tensor
) -> torch.Tensor:
    """Attention over the union of two key sets from each part's output and log-sum-exp."""
    lse = torch.logaddexp(lse1, lse2)
    w1 = torch.exp(lse1 - lse).unsqueeze(-1)
    w2 = torch.exp(lse2 - lse).unsqueeze(-1)
    return (w1 * o1.float() + w2 * o2.float()).to(o1.dtype)


def fast_supported(model: BiTAModel) -> bool:
    cfg = model.base.config
    if getattr(cfg, "model_type", None) not in FAST_MODEL_TYPES:
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False  # the fast loop attends over the whole context
    dec = model.base.get_decoder()
    return hasattr(dec, "layers") and hasattr(dec, "rotary_emb") and hasattr(dec, "norm")


class FastEngine:
    """Preallocated-cache engine (see the module docstring). ``n``: context tokens in the buffer."""

    def __init__(self, model: BiTAModel):
        self.model = model
        dec = model.base.get_decoder()
        self.dec = dec
        self.layers = list(dec.layers)
        cfg = model.config
        self.L, self.nkv, self.d, self.P = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, model.num_prefix
        attn = self.layers[0].self_attn
        self.scale = float(getattr(attn, "scaling", self.d**-0.5))
        self.rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        self.buf: torch.Tensor | None = None
        self.n = 0
        self._pending: tuple[int, int] = (0, 0)

    def reset(self, capacity: int) -> None:
        """A fresh buffer for ``capacity`` context + step tokens, holding the prefix."""
        m = self.model
        cap = self.P + int(capacity)
        if (
            self.buf is None
            or self.buf.shape[3] < cap
            or self.buf.dtype != m.dtype
            or self.buf.device != m.device
        ):
            self.buf = torch.empty(self.L, 2, self.nkv, cap, self.d, dtype=m.dtype, device=m.device)
        kv = m.prefix.detach().to(m.dtype).permute(1, 2, 3, 0, 4)  # [P, L, 2, nkv, d] -> [L, 2, nkv, P, d]
        self.buf[:, :, :, : self.P] = kv
        self.n = 0

    def _attend(self, i: int, qh: torch.Tensor, start: int, a: int, tree: StepTree) -> torch.Tensor:
        """Attention for rows ``[a new context | q tree]`` of layer i; qh [1, nh, a+q, d] -> [1, a+q, nh*d]."""
        P, nkv, d = self.P, self.nkv, self.d
        buf = self.buf
        nh = qh.shape[1]
        g = nh // nkv
        q = tree.q
        outs = []
        ctx_end = start + a  # context keys are buffer rows P .. ctx_end
        if a:
            if start != P:
                raise RuntimeError("new context rows are only supported at prefill")
            k = buf[i, 0, :, P:ctx_end].unsqueeze(0)
            v = buf[i, 1, :, P:ctx_end].unsqueeze(0)
            o = F.scaled_dot_product_attention(
                qh[:, :, :a], k, v, is_causal=True, scale=self.scale, enable_gqa=True
            )
            outs.append(o.transpose(1, 2).reshape(1, a, nh * d))
        # tree rows: query heads sharing a KV head are stacked as rows, [1, nkv, g*q, d]
        qt = qh[:, :, a:].reshape(1, nkv, g * q, d)
        ks = torch.cat([buf[i, 0, :, :P], buf[i, 0, :, ctx_end : ctx_end + q]], dim=1).unsqueeze(0)
        vs = torch.cat([buf[i, 1, :, :P], buf[i, 1, :, ctx_end : ctx_end + q]], dim=1).unsqueeze(0)
        small_mask = tree.small_mask(P, g, torch.float32)  # scores of this part are fp32
        o_s, lse_s = attention_with_lse_reference(qt, ks, vs, self.scale, small_mask)
        if ctx_end > P:
            kc = buf[i, 0, :, P:ctx_end].unsqueeze(0)
            vc = buf[i, 1, :, P:ctx_end].unsqueeze(0)
            o_c, lse_c = attention_with_lse(qt, kc, vc, self.scale)
            o_t = merge_attention(o_c, lse_c, o_s, lse_s)
        else:
            o_t = o_s
        outs.append(o_t.reshape(1, nh, q, d).transpose(1, 2).reshape(1, q, nh * d))
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]

    def run(
        self, new_ctx: torch.Tensor, root: int, cands: torch.Tensor, mask_ids: torch.Tensor, tree: StepTree
    ) -> torch.Tensor:
        """Hidden states [q, H] of the tree rows; the new context and the tree are written to the buffer."""
        m = self.model
        dev = m.device
        a = int(new_ctx.numel())
        n = self.n + a  # root position
        ids = torch.cat([new_ctx, torch.tensor([root], device=dev), cands, mask_ids.repeat(tree.C + 1)])
        pos = torch.cat([torch.arange(self.n, n, device=dev), n + tree.rel_pos])[None]
        T = ids.numel()
        start = self.P + self.n
        if start + T > self.buf.shape[3]:
            raise RuntimeError("KV buffer too small (capacity given to reset)")
        h = m.embed(ids[None])
        cos, sin = self.dec.rotary_emb(h, pos)
        d = self.d
        buf = self.buf
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            qh = attn.q_proj(x).view(1, T, -1, d)
            kh = attn.k_proj(x).view(1, T, -1, d)
            vh = attn.v_proj(x).view(1, T, -1, d)
            if hasattr(attn, "q_norm"):  # qwen3: per-head RMSNorm before RoPE
                qh, kh = attn.q_norm(qh), attn.k_norm(kh)
            qh, kh = self.rope(qh.transpose(1, 2), kh.transpose(1, 2), cos, sin)
            buf[i, 0, :, start : start + T] = kh[0]
            buf[i, 1, :, start : start + T] = vh[0].transpose(0, 1)
            o = self._attend(i, qh, start, a, tree)
            h = h + attn.o_proj(o)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        h = self.dec.norm(h)
        self._pending = (a, n)
        return h[0, a:]

    def accept(self, path: list[int]) -> None:
        """Keep the root and the accepted nodes: copy node rows ``root + path[j]`` to ``root + 1 + j``."""
        a, n = self._pending
        root = self.P + n
        if path:
            src = torch.tensor(path, device=self.buf.device) + root
            self.buf[:, :, :, root + 1 : root + 1 + len(path)] = self.buf[:, :, :, src]
        self.n = n + 1 + len(path)


class HFEngine:
    """The HF decoder + DynamicCache (the previous path). ``use_cache=False``: every step recomputes
    the whole context (``new_ctx`` must then be everything before the root; ``n`` stays 0)."""

    def __init__(self, model: BiTAModel, use_cache: bool = True):
        self.model = model
        self.use_cache = use_cache
        self.cache: Any = None
        self.n = 0
        self._pending: tuple[int, int] = (0, 0)

    def reset(self, capacity: int = 0) -> None:
        self.cache = self.model.prefix_cache(1)
        self.n = 0

    def run(
        self, new_ctx: torch.Tensor, root: int, cands: torch.Tensor, mask_ids: torch.Tensor, tree: StepTree
    ) -> torch.Tensor:
        m = self.model
        dev = m.device
        if not self.use_cache:
            self.reset()
        cached = self.n
        a = new_ctx.numel()
        n = cached + a
        P = m.num_prefix
        ids = torch.cat([new_ctx, torch.tensor([root], device=dev), cands, mask_ids.repeat(tree.C + 1)])
        pos = torch.cat([torch.arange(cached, n, device=dev), n + tree.rel_pos])
        q = tree.q
        # keys: [prefix P | cached ctx | new ctx a | tree q]
        tree_rows = torch.cat(
            [
                tree.mask_rows.unsqueeze(1).expand(q, P),
                torch.ones(q, cached + a, dtype=torch.bool, device=dev),
                tree.block,
            ],
            dim=1,
        )
        if a:
            ctx_rows = torch.cat(
                [
                    torch.zeros(a, P, dtype=torch.bool, device=dev),
                    torch.ones(a, cached, dtype=torch.bool, device=dev),
                    torch.ones(a, a, dtype=torch.bool, device=dev).tril(),
                    torch.zeros(a, q, dtype=torch.bool, device=dev),
                ],
                dim=1,
            )
            visible = torch.cat([ctx_rows, tree_rows], dim=0)
        else:
            visible = tree_rows
        mask = additive_mask(visible, m.dtype)[None, None]
        hidden = m.hidden_states(ids[None], mask, pos[None], self.cache)[0]
        self._pending = (a, n)
        return hidden[a:]

    def accept(self, path: list[int]) -> None:
        a, n = self._pending
        if not self.use_cache:
            return
        P = self.model.num_prefix
        keep_len, extra = P + n + 1, [P + n + p for p in path]
        for layer in self.cache.layers:
            if extra:
                idx = torch.tensor(list(range(keep_len)) + extra, device=layer.keys.device)
                layer.keys = layer.keys.index_select(-2, idx)
                layer.values = layer.values.index_select(-2, idx)
            else:
                layer.keys = layer.keys[..., :keep_len, :]
                layer.values = layer.values[..., :keep_len, :]
        self.n = n + 1 + len(path)


def bf16_spacing(x: float) -> float:
    """Distance between adjacent bf16 numbers at magnitude |x| (8 significant bits)."""
    ax = abs(float(x))
    if ax == 0.0:
        return 0.0
    return 2.0 ** (math.floor(math.log2(ax)) - 7)
