"""The quantization group size for a model, fitted or checked before any weight loads.

Every quantized layer ``W [N, K]`` is cut into groups of ``g`` inputs, so ``g`` must divide each
layer's ``K``. The check runs on a weightless (meta-device) copy built from the model's config, so
a group size that does not fit is a one-line error before minutes of loading.
"""

from __future__ import annotations

import logging

from leanlm.core.errors import UserError

log = logging.getLogger("leanlm.bitdistiller")

GROUP_SIZES = (128, 64, 32)  # tried in this order when --group-size is not given


def fit_group_size(model: str, group_size: int | None) -> int:
    """``group_size`` checked against ``model``'s layers, or (None) the largest of ``GROUP_SIZES`` that fits.

    The embedded model's 576-wide layers take 64, not the paper's 128. A BitDistiller latent
    checkpoint is refused: it is already quantized, training or clipping starts from full precision.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from leanlm.bitdistiller.checkpoint import is_latent_checkpoint
    from leanlm.bitdistiller.modules import check_group_size
    from leanlm.core.models import check_model_folder, model_location

    location = check_model_folder(model_location(model))
    if is_latent_checkpoint(location):  # transformers would refuse it (sealed); say why in one line
        raise UserError(
            f"{model} is a BitDistiller QAT/clipped checkpoint (latent weights); start from the "
            "full-precision model and pass --clip CACHE, or evaluate/export the checkpoint"
        )
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(location))
    if group_size is not None:
        check_group_size(skeleton, group_size)
        return group_size
    for g in GROUP_SIZES[:-1]:
        try:
            check_group_size(skeleton, g)
        except UserError:
            continue
        log.info("--group-size not given: using %d, the largest of %s that fits %s", g, GROUP_SIZES, model)
        return g
    check_group_size(skeleton, GROUP_SIZES[-1])  # fits, or names the layer it does not fit
    return GROUP_SIZES[-1]
