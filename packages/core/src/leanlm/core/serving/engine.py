"""The serving engine: one worker thread decodes batches of queued requests, token by token.

Requests wait in a bounded queue. The worker takes the first one and every other that arrives
within ``gather_seconds`` (20 ms; up to ``max_batch``), left-pads their prompts and decodes them together with one KV cache:

    prefill  logits[b] = model(ids [B, P], attention_mask [B, P], position_ids)[:, -1]
    step     next[b]   = argmax(logits[b]) (or a seeded top-p sample at the row's temperature)
             logits    = model(next [B, 1], mask [B, P + t], past_key_values)[:, -1]

Each new token's text (the decoded answer minus what was already sent; an incomplete UTF-8
character waits for its next byte) goes to the request's asyncio queue as it is produced, so a
stream sees tokens as they come. A row ends at an EOS id, a stop string (cut before it), its
``max_tokens``, or when its client went away (``Job.cancel``); the batch ends when every row has.
Greedy rows equal ``model.generate`` on the prompt alone (left padding, position ids from the mask).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from leanlm.core.generation.base import Backend
from leanlm.core.generation.hf import cut_at_stop, end_token_ids
from leanlm.core.generation.types import GenerationRequest, GenerationResult, SamplingParams

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests wait than the server accepts; the client should retry later (503)."""


@dataclass
class Job:
    """One request: its prompt ids and sampling, and where its events go.

    Events on ``events`` (read in the server's event loop): ``("text", str)`` for each new piece of
    the answer, then ``("end", finish_reason, completion_tokens)``, or ``("error", message)``.
    """

    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    request: GenerationRequest | None = None  # what the client sent (for engines that take text)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.perf_counter)

    def send(self, *event: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        """The client went away: the worker drops this row at its next step."""
        self.cancelled.set()


@dataclass
class _Row:
    job: Job
    ids: list[int] = field(default_factory=list)
    sent: str = ""  # the text already delivered
    done: bool = False
    generator: Any = None


class EngineBase:
    """A bounded queue of jobs and one thread taking them in batches of up to ``max_batch``."""

    def __init__(self, tokenizer: Any, max_batch: int, max_queue: int):
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.waiting: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.tokens_generated = 0  # over all requests: how much decoding was done (tests, /health)
        self.gather_seconds = 0.02  # how long the first request of a batch waits for company
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="leanlm-serve-engine", daemon=True)
        self._thread.start()

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        from leanlm.core.generation.hf import prompt_ids

        return prompt_ids(self.tokenizer, request)

    def _decode(self, batch: list[Job]) -> None:
        raise NotImplementedError

    # -- the public side --------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        try:
            self.waiting.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.waiting.maxsize} requests are already waiting") from None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    # -- the worker -------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.waiting.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.perf_counter() + self.gather_seconds
            while len(batch) < self.max_batch:
                try:  # requests sent together arrive a few ms apart: wait that long to batch them
                    batch.append(self.waiting.get(timeout=max(0.0, deadline - time.perf_counter())))
                except queue.Empty:
                    break
            batch = [j for j in batch if not j.cancelled.is_set()]
            if not batch:
                continue
            try:
                self._decode(batch)
            except Exception as e:  # a bug or an OOM must answer the clients, not kill the worker
                log.exception("decoding failed")
                for job in batch:
                    job.send("error", f"{type(e).__name__}: {e}")


class BackendEngine(EngineBase):
    """Serves a generation ``Backend`` that is not token-streaming (a method's decoding registered
    under ``leanlm.backends``, e.g. BiTA's): one request at a time, its whole answer as one event."""

    def __init__(self, backend: Backend, tokenizer: Any, max_queue: int = 256):
        self.backend = backend
        super().__init__(tokenizer, max_batch=1, max_queue=max_queue)

    def _decode(self, batch: list[Job]) -> None:
        for job in batch:
            got: list[GenerationResult] = []
            request = job.request or GenerationRequest(id="0", prompt=self.tokenizer.decode(job.prompt_ids))
            self.backend.run([request], job.params, got.append)
            result = got[0]
            if not result.ok:
                job.send("error", result.error or "generation failed")
                continue
            n = result.completion_tokens or len(
                self.tokenizer(result.text, add_special_tokens=False)["input_ids"]
            )
            self.tokens_generated += n
            if result.text:
                job.send("text", result.text)
            job.send("end", "length" if n >= job.params.max_new_tokens else "stop", n)


class Engine(EngineBase):
    """Batched, streaming decoding of one HF causal LM for the server (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 8, max_queue: int = 256):
        self.model = model
        super().__init__(tokenizer, max_batch, max_queue)

    def _decode(self, batch: list[Job]) -> None:
        import torch

        rows = [_Row(job) for job in batch]
        for row in rows:
            if not row.job.params.greedy:
                row.generator = torch.Generator(device="cpu").manual_seed(int(row.job.params.seed or 0))
        end_ids = end_token_ids(self.model.generation_config, self.tokenizer)
        device = next(self.model.parameters()).device
        width = max(len(j.prompt_ids) for j in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in batch], device=device)
        mask = torch.tensor(
            [[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in batch], device=device
        )
        limit = max(j.params.max_new_tokens for j in batch)
        cache = None
        with torch.inference_mode():
            for _ in range(limit):
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                if cache is not None:
                    positions = positions[:, -1:]
                out = self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                )
                cache = out.past_key_values
                logits = out.logits[:, -1, :].float()
                nxt = [self._choose(row, logits[b]) for b, row in enumerate(rows)]
                for row, token in zip(rows, nxt):
                    if not row.done:
                        self._advance(row, token, end_ids)
                if all(row.done for row in rows):
                    break
                ids = torch.tensor([[t] for t in nxt], device=device)
                mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)

    def _choose(self, row: _Row, logits: Any) -> int:
        import torch

        p = row.job.params
        if row.done or p.greedy:
            return int(logits.argmax())
        probs = torch.softmax(logits / p.temperature, dim=-1)
        if p.top_p < 1.0:  # nucleus: keep the smallest set of top tokens whose mass reaches top_p
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(0) - sorted_probs < p.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs.cpu(), 1, generator=row.generator))

    def _advance(self, row: _Row, token: int, end_ids: set[int]) -> None:
        job = row.job
        if job.cancelled.is_set():
            row.done = True
            return
        if token in end_ids:
            self._emit(row, self.tokenizer.decode(row.ids, skip_special_tokens=True).rstrip("\ufffd"))
            return self._finish(row, "stop")
        row.ids.append(token)
        self.tokens_generated += 1
        text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        stop = job.params.stop
        answer = cut_at_stop(text, stop)
        if len(answer) < len(text):  # a stop string appeared: the answer ends before it
            self._emit(row, answer)
            return self._finish(row, "stop")
        if not text.endswith("\ufffd"):  # an incomplete multi-byte character waits for its next token
            # hold back a tail that may yet become a stop string, so no part of one is ever sent
            held = max((len(s) for s in stop if s), default=1) - 1 if stop else 0
            self._emit(row, text[: len(text) - held])
        if len(row.ids) >= job.params.max_new_tokens:
            self._emit(row, text.rstrip("\ufffd"))  # the end: what was held back goes out
            self._finish(row, "length")

    def _emit(self, row: _Row, text: str) -> None:
        if len(text) > len(row.sent) and text.startswith(row.sent):
            row.job.send("text", text[len(row.sent) :])
            row.sent = text

    def _finish(self, row: _Row, reason: str) -> None:
        row.done = True
        row.job.send("end", reason, len(row.ids))
