"""Generation with real savings: rows whose router says skip do not run the block.

Prefill runs the masked full-sequence forward over the prompt (every token is computed, the
masks are honoured) and stores K/V plus a per-layer validity mask. Each decode step then walks
the layers with a [B, 1, H] hidden state:

    w = router_l(h) (reserved positions execute)          rows = {b : w_b = 1 and b unfinished}
    rows run attention over their cache slots whose valid bit is set, write K/V and valid = 1
    other rows keep h unchanged and write nothing at layer l

The cache is allocated once per model (gpt-fast style, grown on demand) and reset at the start
of every ``generate`` call, so nothing from an earlier call can be attended to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from leanlm.dllm.flops import CostModel, request_costs
from leanlm.dllm.model import DLLM, AttentionPlan, dllm_attention, position_ids_from_mask, run_layer


class KVCache:
    """k, v: per layer [B, n_kv, S, d]; valid: [L, B, S] bool (True = slot holds a real key at this layer)."""

    def __init__(self) -> None:
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.valid = torch.zeros(0, 0, 0, dtype=torch.bool)

    def setup(self, dllm: DLLM, batch: int, length: int) -> KVCache:
        """Allocate (or reuse when big enough) and clear the validity mask."""
        layers = dllm.layers
        attn = layers[0].self_attn
        n_kv = dllm.lm.config.num_key_value_heads
        dtype, device = next(attn.parameters()).dtype, dllm.device
        fits = (
            self.k
            and len(self.k) == len(layers)
            and self.k[0].shape[0] == batch
            and self.k[0].shape[2] >= length
            and self.k[0].dtype == dtype
            and self.k[0].device == device
        )
        if not fits:
            shape = (batch, n_kv, length, attn.head_dim)
            self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in layers]
            self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in layers]
            self.valid = torch.zeros(len(layers), batch, length, dtype=torch.bool, device=device)
        self.valid.zero_()
        return self


@dataclass
class GenerationOutput:
    tokens: list[list[int]]  # new tokens per row (up to and including EOS)
    stats: list[dict[str, float]] = field(default_factory=list)  # per row: ratios, see flops.request_costs
    seconds: float = 0.0
    decode_seconds: float = 0.0
    new_tokens: int = 0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_seconds if self.decode_seconds > 0 else float("nan")


def _sample(
    logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator | None
) -> torch.Tensor:
    """logits [B, V] -> token ids [B]: greedy when temperature == 0, else nucleus sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


@torch.no_grad()
def _decode_step(
    dllm: DLLM, cache: KVCache, tok: torch.Tensor, pos: torch.Tensor, slot: int, active: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row. tok, pos [B]; active [B] bool. Returns logits [B, V] and executed [B, L]."""
    lm = dllm.lm
    h = lm.model.embed_tokens(tok)[:, None, :]  # [B, 1, H]
    cos, sin = lm.model.rotary_emb(h, pos[:, None])
    reserved = (pos < dllm.config.reserve_initials)[:, None]
    executed = torch.zeros(tok.shape[0], dllm.num_layers, dtype=torch.bool, device=h.device)
    everyone = bool(active.all())
    for i, layer in enumerate(dllm.layers):
        run = (dllm.decisions(i, h, reserved)[:, 0] > 0.5) & active
        if not bool(run.any()):
            continue  # no row runs this block: no compute, no KV written
        executed[:, i] = run
        if everyone and bool(run.all()):  # common batch-1 case: plain slices, no gather/scatter
            h = run_layer(layer, h, (cos, sin), AttentionPlan("decode", cache=cache, layer=i, slot=slot))
            continue
        rows = run.nonzero().squeeze(1)
        plan = AttentionPlan("decode", cache=cache, layer=i, slot=slot, rows=rows)
        h = h.index_copy(0, rows, run_layer(layer, h[rows], (cos[rows], sin[rows]), plan))
    return dllm.head(lm.model.norm(h))[:, 0], executed


@torch.no_grad()
def _prefill(
    dllm: DLLM, cache: KVCache, input_ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked full forward over the prompt [B, T]: every token is computed, and its K/V kept
    (valid) only at the layers where it executed. Returns last-position logits [B, V] and the
    prompt's decisions [B, T, L] (bool)."""
    t = input_ids.shape[1]
    out = dllm(input_ids, mask.long(), return_kv=True, last_only=True)
    for i, (k, v) in enumerate(out.kv):
        cache.k[i][:, :, :t], cache.v[i][:, :, :t] = k, v
        cache.valid[i, :, :t] = (out.execs[..., i] > 0.5) & mask
    return out.logits[:, -1], out.execs > 0.5


def _row_stats(
    cost: CostModel,
    cache: KVCache,
    r: int,
    new_tokens: int,
    mask: torch.Tensor,
    positions: torch.Tensor,
    prompt_execs: torch.Tensor,
    step_execs: list[torch.Tensor],
    step_active: list[torch.Tensor],
) -> dict[str, float]:
    """Row ``r``'s compute (``request_costs``) over its real prompt tokens' decisions [T, L] and those
    of the tokens it was fed while active (``step_execs[s][r]`` [L]); ``kv_ratio`` = valid cache
    slots / (tokens * L); ``decode_exec_ratio``: the executed fraction over the fed tokens only."""
    real = mask[r].cpu()
    ex = [prompt_execs[r].cpu()[real]]
    ps = [positions[r].cpu()[real]]
    fed = [s for s, a in enumerate(step_active) if a[r]]
    if fed:
        ex.append(torch.stack([step_execs[s][r] for s in fed]))
        ps.append(positions[r, -1].cpu() + 1 + torch.tensor(fed))
    row = request_costs(cost, torch.cat(ex), torch.cat(ps))
    kv_slots = row["tokens"] * cache.valid.shape[0]
    row["kv_ratio"] = float(cache.valid[:, r].sum()) / kv_slots
    row["new_tokens"] = new_tokens
    decode_rows = [step_execs[s][r] for s in fed]
    row["decode_exec_ratio"] = float(torch.stack(decode_rows).float().mean()) if decode_rows else float("nan")
    return row


@torch.no_grad()
def generate(
    dllm: DLLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 32,
    eos_token_id: int | list[int] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    cache: KVCache | None = None,
) -> GenerationOutput:
    """Decode ``max_new_tokens`` per row from left-padded ``input_ids`` [B, T]; per-row compute stats."""
    was_training = dllm.training
    dllm.eval()
    t0 = time.perf_counter()
    device = dllm.device
    input_ids = input_ids.to(device)
    b, t = input_ids.shape
    mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)).bool()
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
    if cache is None:
        cache = dllm.__dict__.setdefault("_kv_cache", KVCache())
    cache.setup(dllm, b, t + max_new_tokens)
    gen = torch.Generator(device="cpu").manual_seed(seed) if temperature > 0 else None

    logits, prompt_execs = _prefill(dllm, cache, input_ids, mask)
    positions = position_ids_from_mask(mask)
    tok = _sample(logits, temperature, top_p, gen).cpu()
    t_decode = time.perf_counter()

    tokens: list[list[int]] = [[] for _ in range(b)]
    active = torch.ones(b, dtype=torch.bool)
    step_execs: list[torch.Tensor] = []  # [B, L] per fed token
    step_active: list[torch.Tensor] = []
    pos = positions[:, -1].cpu() + 1
    with dllm_attention(dllm.layers):  # HF layers attend through D-LLM's masks and cache
        for step in range(max_new_tokens):
            for r in range(b):
                if active[r]:
                    tokens[r].append(int(tok[r]))
                    if int(tok[r]) in eos:
                        active[r] = False
            if step == max_new_tokens - 1 or not bool(active.any()):
                break
            logits, executed = _decode_step(
                dllm, cache, tok.to(device), pos.to(device), t + step, active.to(device)
            )
            step_execs.append(executed.cpu())
            step_active.append(active.clone())
            tok = _sample(logits, temperature, top_p, gen).cpu()
            pos = pos + 1
    t_end = time.perf_counter()

    cost = CostModel.of(dllm)
    trace = (mask, positions, prompt_execs, step_execs, step_active)
    stats = [_row_stats(cost, cache, r, len(new), *trace) for r, new in enumerate(tokens)]
    if was_training:
        dllm.train()
    total = sum(len(x) for x in tokens)
    return GenerationOutput(
        tokens, stats, seconds=t_end - t0, decode_seconds=t_end - t_decode, new_tokens=total
    )


@torch.no_grad()
def reference_generate(
    dllm: DLLM, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 16
) -> list[list[int]]:
    """Slow greedy reference: recompute the whole masked sequence for every new token (no cache)."""
    dllm.eval()
    ids = input_ids.to(dllm.device)
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(dllm.device)
    new = []
    for _ in range(max_new_tokens):
        nxt = dllm(ids, mask, last_only=True).logits[:, -1].argmax(-1, keepdim=True)
        new.append(nxt)
        ids = torch.cat([ids, nxt], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return torch.cat(new, dim=1).tolist()
