"""leanlm.switchback: int8 training layers (SwitchBack), model surgery, fine-tuning, benchmark, statistics.

from leanlm.switchback import SwitchBackLinear, swap_linear_layers
swapped = swap_linear_layers(model)          # int8 forward/grad-input; lm_head, k_proj, v_proj kept
"""

from leanlm.switchback.layers import (
    VARIANTS,
    StandardLinear,
    SwitchBackLinear,
    SwitchBackLinearMemEfficient,
    SwitchBackLinearVectorwise,
    variant_class,
)
from leanlm.switchback.surgery import DEFAULT_EXCLUDE, swap_linear_layers, unswap_linear_layers

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_EXCLUDE",
    "VARIANTS",
    "StandardLinear",
    "SwitchBackLinear",
    "SwitchBackLinearMemEfficient",
    "SwitchBackLinearVectorwise",
    "swap_linear_layers",
    "unswap_linear_layers",
    "variant_class",
]
