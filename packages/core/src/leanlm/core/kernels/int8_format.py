"""The absmax int8 format shared by the PyTorch path (``int8.py``) and the Triton kernels (``triton_int8.py``).

A group with absolute maximum ``s`` maps to ``q = round(x * (QMAX / max(s, EPS)))`` in [-QMAX, QMAX].
Kept apart from both implementations so neither imports the other for the constants.
"""

EPS = 1e-12  # an all-zero group gives q = 0 (and dequantizes to 0) instead of NaN
QMAX = 127.0
