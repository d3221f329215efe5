"""leanlm.core: the shared foundation of the leanlm packages.

Modules are imported on demand (``from leanlm.core.models import load_model``) so that
``import leanlm.core`` stays cheap and does not pull in torch or transformers.
"""

from leanlm.core.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]
