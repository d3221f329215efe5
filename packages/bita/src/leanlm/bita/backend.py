"""BiTA tree decoding as a core generation backend (entry point ``leanlm.backends: bita``).

Registered in this package's ``pyproject.toml``, so any pipeline that takes ``--backend`` (Lion's
roles, BitDistiller's teacher data, ``leanlm serve --backend bita``) can decode with BiTA without
importing this package: ``get_backend("bita", model=ADAPTER_FOLDER)``.

``model`` is a BiTA adapter folder (its ``bita_config.json`` points at the base), or a base model
name/folder together with ``adapter=``. Requests are answered one at a time (batch size 1 is what
the tree verifier does); greedy output is token-identical to the base model's greedy output in
fp32, sampled output follows the base model's distribution (speculative acceptance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.generation.base import Backend, OnResult
from leanlm.core.generation.hf import answer, end_token_ids, prompt_ids
from leanlm.core.generation.types import GenerationRequest, SamplingParams


def _is_adapter(path: str) -> bool:
    from leanlm.bita.model import CONFIG_FILE

    return (Path(path) / CONFIG_FILE).is_file()


class BiTABackend(Backend):
    """Answers requests with ``BiTADecoder`` (tree ``tree``, e.g. ``1``, ``1-1``, ``auto:8``, ``1+pld:3``)."""

    name = "bita"

    def __init__(
        self,
        model: str = "default",
        adapter: str | None = None,
        tree: str = "1",
        dtype: str | None = None,
        device: str | None = None,
        tokenizer: Any = None,
    ):
        super().__init__()
        from leanlm.bita.calibration import load_calibration
        from leanlm.bita.decoding import split_method
        from leanlm.bita.model import load_bita, read_adapter_config
        from leanlm.core.models import load_model, load_tokenizer

        if adapter is None:
            if not _is_adapter(str(model)):
                raise UserError(
                    f"the bita backend needs a BiTA adapter folder: {model!r} has no bita_config.json "
                    "(pass --model ADAPTER_FOLDER, or the base model with adapter=ADAPTER_FOLDER)"
                )
            adapter, base_name = str(model), read_adapter_config(model).base_model
            self.model = load_bita(adapter, dtype=dtype, device=device)
        else:
            read_adapter_config(adapter)  # a clear line if it is not an adapter folder
            base_name = str(model)
            self.model = load_bita(adapter, load_model(base_name, dtype=dtype, device=device))
        self.adapter = adapter
        self.tokenizer = load_tokenizer(base_name) if tokenizer is None else tokenizer
        self.tree, self.lookup = split_method(str(tree))
        self.calibration = load_calibration(adapter)
        self._decoders: dict[tuple[float, float, int], Any] = {}
        self.tree_label = self._decoder(SamplingParams()).label()  # parse the tree now: bad input fails here

    def _decoder(self, params: SamplingParams) -> Any:
        """One decoder per sampling setting (it owns its preallocated cache; reused across requests)."""
        from leanlm.bita.decoding import BiTADecoder

        seed = int(params.seed or 0)
        key = (params.temperature, params.top_p, seed)
        if key not in self._decoders:
            self._decoders[key] = BiTADecoder(
                self.model,
                self.tree,
                calibration=self.calibration,
                lookup_tokens=self.lookup,
                temperature=params.temperature,
                top_p=params.top_p,
                seed=seed,
            )
        return self._decoders[key]

    def run(self, requests: Sequence[GenerationRequest], params: SamplingParams, on_result: OnResult) -> None:
        decoder = self._decoder(params)
        end_ids = end_token_ids(self.model.base.generation_config, self.tokenizer)
        for request in requests:
            ids = prompt_ids(self.tokenizer, request)
            out = decoder.generate(ids, params.max_new_tokens, sorted(end_ids))
            generated = list(out.tokens)
            self.stats.add(requests=1, prompt_tokens=len(ids), completion_tokens=len(generated))
            meta = {"forwards": out.forwards, "mean_accepted": round(out.mean_accepted, 4)}
            on_result(answer(self.tokenizer, request, len(ids), generated, end_ids, params, **meta))
