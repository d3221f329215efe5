"""Shared kernels: Triton on CUDA, PyTorch elsewhere, behind one dispatch (see ``dispatch``).

* ``leanlm.core.kernels.int8``: absmax int8 quantize (row-wise, column-wise + transpose, global,
  global + transpose), dequantize, int8 matmul with row-wise or global dequantize (SwitchBack).
* ``leanlm.core.kernels.lowbit``: asymmetric 2/3/4-bit group quantize, int32 packing, unpacking,
  dequantize-matmul (BitDistiller's packed export).
"""

from leanlm.core.kernels.dispatch import kernel_backend, triton_available, use_triton

__all__ = ["kernel_backend", "triton_available", "use_triton"]
