"""leanlm.bita: BiTA, lossless faster greedy decoding with trained mask tokens and a deep prefix.

    from leanlm.bita import BiTAModel, BiTAConfig, BiTADecoder, load_bita
    bita = BiTAModel(base_model, BiTAConfig(num_masks=3, num_prefix=16))   # or load_bita("adapter/")
    out = BiTADecoder(bita, tree="1-1").generate(prompt_ids, max_new_tokens=128, eos_token_id=eos)
    # trees: "1", "1-1", "3-2-1", "tri:5", "auto:N" (with calibration=load_calibration(adapter));
    # lookup_tokens=3 adds a prompt-lookup branch; temperature/top_p sample losslessly

Imports are lazy so that ``import leanlm.bita`` does not pull in torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BiTAConfig": "leanlm.bita.model",
    "BiTAModel": "leanlm.bita.model",
    "load_bita": "leanlm.bita.model",
    "BiTADecoder": "leanlm.bita.decoding",
    "TreeSpec": "leanlm.bita.trees",
    "DecodeOutput": "leanlm.bita.decoding",
    "StepTree": "leanlm.bita.trees",
    "Calibration": "leanlm.bita.calibration",
    "choose_tree": "leanlm.bita.calibration",
    "collect_calibration": "leanlm.bita.calibration",
    "load_calibration": "leanlm.bita.calibration",
    "build_example": "leanlm.bita.data",
    "train_adapter": "leanlm.bita.train",
    "evaluate_speed": "leanlm.bita.evaluate",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'leanlm.bita' has no attribute {name!r}")
