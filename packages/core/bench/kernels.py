"""Benchmark: the shared kernels against the float matmul they replace, in one run.

int8 (SwitchBack's forward): ``quantize_rowwise(X)`` + ``int8_matmul_global_dequantize`` against a
16-bit ``X @ W^T``; also the bare int8 x int8 -> int32 product against the 16-bit product.
low-bit (BitDistiller's packed export): ``lowbit_matmul`` (dequantize inside the matmul) against a
16-bit ``X @ W^T`` with the unpacked weight, and against the PyTorch path (unpack, dequantize, matmul).
Shapes are LLaMA-7B's projections (K = 4096, N = 4096 and 11008) at decode (M = 1, 16) and prefill
(M = 2048) sizes on CUDA; smaller ones on CPU. packed (``leanlm.core.packed.PackedLinear``, bf16
activations, g = 64): PyTorch's int4 weight-only kernel against the exact dequantize-matmul and dense
fp32/bf16 ``F.linear``, including SmolLM2-135M's shapes on CPU.

    uv run python packages/core/bench/kernels.py                   # CPU, small shapes
    python packages/core/bench/kernels.py --device cuda            # a GPU: Triton kernels

Writes ``results.json`` (key ``kernels_<device>``, other keys kept) and a section of ``results.md``
in ``bench/results/<label>/`` (``--label``, default the device; ``--out`` names another folder). Ratios > 1 mean
the kernel is faster.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from leanlm.core.bench_report import save_section
from leanlm.core.kernels import int8, lowbit
from leanlm.core.kernels.dispatch import use_triton

HERE = Path(__file__).resolve().parent


def timed(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median milliseconds per call; CUDA calls are timed with events after a warm-up (compiles Triton)."""
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=max(repeats, 20), return_mode="median"))
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _int8_linear(x: torch.Tensor, qwt: torch.Tensor, sw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """SwitchBack's forward: quantize X row-wise, int8 matmul with the global-scaled weight, dequantize."""
    q, s = int8.quantize_rowwise(x)
    return int8.int8_matmul_global_dequantize(q, qwt, s, sw, dtype=dtype)


def _unfused_lowbit(x, packed, scales, zeros, bits: int, group: int) -> torch.Tensor:
    """What a plain PyTorch export does: materialize the 16-bit weight, then matmul."""
    w = lowbit.dequantize_packed(packed, scales, zeros, bits, group, x.shape[-1], x.dtype)
    return torch.nn.functional.linear(x, w)


def int8_rows(
    device: str, shapes: list[tuple[int, int, int]], dtype: torch.dtype, repeats: int
) -> list[dict]:
    rows = []
    for m, k, n in shapes:
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(m, k, device=device, generator=g, dtype=dtype)
        w = torch.randn(n, k, device=device, generator=g, dtype=dtype) * 0.02
        qw, sw = int8.quantize_global(w)  # the weight is quantized once per step, outside the timing
        qwt = qw.t()
        qx, _ = int8.quantize_rowwise(x)

        float_mm = partial(torch.matmul, x, w.t())
        int8_linear = partial(_int8_linear, x, qwt, sw, dtype)
        bare_int_mm = partial(int8.int_mm, qx, qwt)

        row: dict[str, Any] = {
            "m": m,
            "k": k,
            "n": n,
            "dtype": str(dtype).split(".")[-1],
            "path": "triton" if use_triton(x) else "torch",
        }
        row["float_ms"] = timed(float_mm, device, repeats)
        row["int8_linear_ms"] = timed(int8_linear, device, repeats)
        row["int_mm_ms"] = timed(bare_int_mm, device, repeats)
        row["int8_linear_speedup"] = row["float_ms"] / row["int8_linear_ms"]
        row["int_mm_speedup"] = row["float_ms"] / row["int_mm_ms"]
        rows.append(row)
        print(row, flush=True)
    return rows


def lowbit_rows(
    device: str,
    shapes: list[tuple[int, int, int]],
    bits_list: list[int],
    group: int,
    dtype: torch.dtype,
    repeats: int,
) -> list[dict]:
    rows = []
    for m, k, n in shapes:
        g = torch.Generator(device=device).manual_seed(0)
        w = torch.randn(n, k, device=device, generator=g) * 0.02
        x = torch.randn(m, k, device=device, generator=g).to(dtype)
        for bits in bits_list:
            q = lowbit.quantize_asym(w, bits, group)
            packed = lowbit.pack(q.codes, bits)
            w16 = lowbit.dequantize(*q, group_size=group, dtype=dtype)

            float_mm = partial(torch.nn.functional.linear, x, w16)
            fused = partial(lowbit.lowbit_matmul, x, packed, q.scales, q.zeros, bits, group)
            unfused = partial(_unfused_lowbit, x, packed, q.scales, q.zeros, bits, group)

            row: dict[str, Any] = {
                "m": m,
                "k": k,
                "n": n,
                "bits": bits,
                "group": group,
                "dtype": str(dtype).split(".")[-1],
                "path": "triton" if use_triton(x) else "torch",
                "weight_bytes_ratio": w16.numel()
                * w16.element_size()
                / (packed.numel() * 4 + q.scales.numel() * 4 + q.zeros.numel()),
            }
            row["float_ms"] = timed(float_mm, device, repeats)
            row["lowbit_ms"] = timed(fused, device, repeats)
            os.environ["LEANLM_KERNELS"] = "torch"
            try:
                row["unfused_torch_ms"] = timed(unfused, device, repeats)
            finally:
                os.environ.pop("LEANLM_KERNELS")
            row["lowbit_vs_float"] = row["float_ms"] / row["lowbit_ms"]
            row["lowbit_vs_unfused"] = row["unfused_torch_ms"] / row["lowbit_ms"]
            rows.append(row)
            print(row, flush=True)
    return rows


def packed_rows(
    device: str, shapes: list[tuple[int, int, int]], bits_list: list[int], group: int, repeats: int
) -> list[dict[str, Any]]:
    """PackedLinear with bf16 activations: PyTorch's int4 kernel (CPU / tinygemm) vs the exact path, fp32, bf16."""
    from leanlm.core.kernels import int4pack
    from leanlm.core.packed import PackedLinear

    rows = []
    for m, k, n in shapes:
        for bits in bits_list:
            if k % group or (k * bits) % 32 or (n * bits) % 32:
                continue
            w = torch.randn(n, k, device=device) * 0.02
            q = lowbit.quantize_asym(w, bits, group)
            layer = PackedLinear.from_codes(q.codes, q.scales, q.zeros, bits, group).to(device)
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            w32, w16 = layer.dequantized(torch.float32), layer.dequantized(torch.bfloat16)
            x32 = x.float()
            row = {
                "m": m,
                "k": k,
                "n": n,
                "bits": bits,
                "group": group,
                "fp32_ms": timed(partial(torch.nn.functional.linear, x32, w32), device, repeats),
                "bf16_ms": timed(partial(torch.nn.functional.linear, x, w16), device, repeats),
                "exact_ms": timed(partial(layer._exact, x), device, repeats),
            }
            ok = int4pack.cpu_supported(k, group) if device == "cpu" else int4pack.cuda_supported(n, k, group)
            row["int4pack_ms"] = (
                timed(partial(layer._int4_matmul, x), device, repeats) if ok else float("nan")
            )
            row["auto"] = layer.kernel_for(x)
            row["auto_ms"] = timed(partial(layer, x), device, repeats)
            row["auto_vs_fp32"] = row["fp32_ms"] / row["auto_ms"]
            row["auto_vs_bf16"] = row["bf16_ms"] / row["auto_ms"]
            rows.append(row)
            print(row, flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"## kernels on {result['device_name']}",
        "",
        f"torch {result['torch']}, triton {result['triton']}; median ms per call"
        + (" (triton.testing.do_bench, CUDA events)" if result["device"] == "cuda" else "")
        + ".",
        "",
        "### int8 linear (SwitchBack forward): quantize X row-wise + int8 matmul + dequantize, vs 16-bit X @ W^T",
        "",
        "| M | K | N | dtype | path | 16-bit ms | int8 linear ms | speed-up | bare int_mm ms | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["int8"]:
        lines.append(
            f"| {r['m']} | {r['k']} | {r['n']} | {r['dtype']} | {r['path']} | {r['float_ms']:.3f} | "
            f"{r['int8_linear_ms']:.3f} | {r['int8_linear_speedup']:.2f}x | {r['int_mm_ms']:.3f} | "
            f"{r['int_mm_speedup']:.2f}x |"
        )
    lines += [
        "",
        "### low-bit matmul (BitDistiller packed weights), vs 16-bit X @ W^T and vs unpack + dequantize + matmul",
        "",
        "| M | K | N | bits | g | path | 16-bit ms | lowbit ms | vs 16-bit | unfused ms | vs unfused | weight bytes 16-bit / packed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["lowbit"]:
        lines.append(
            f"| {r['m']} | {r['k']} | {r['n']} | {r['bits']} | {r['group']} | {r['path']} | "
            f"{r['float_ms']:.3f} | {r['lowbit_ms']:.3f} | {r['lowbit_vs_float']:.2f}x | "
            f"{r['unfused_torch_ms']:.3f} | {r['lowbit_vs_unfused']:.2f}x | {r['weight_bytes_ratio']:.1f} |"
        )
    if result.get("packed"):
        lines += [
            "",
            "### PackedLinear, bf16 activations: PyTorch int4 kernel (CPU int4pack / CUDA tinygemm) vs the exact "
            "dequantize-matmul (Triton on CUDA), fp32 and bf16 dense; `auto` is what forward() picks",
            "",
            "| M | K | N | bits | g | fp32 ms | bf16 ms | exact ms | int4 kernel ms | auto | auto ms | vs fp32 | vs bf16 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["packed"]:
            lines.append(
                f"| {r['m']} | {r['k']} | {r['n']} | {r['bits']} | {r['group']} | {r['fp32_ms']:.3f} | "
                f"{r['bf16_ms']:.3f} | {r['exact_ms']:.3f} | {r['int4pack_ms']:.3f} | {r['auto']} | "
                f"{r['auto_ms']:.3f} | {r['auto_vs_fp32']:.2f}x | {r['auto_vs_bf16']:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bits", default="2,3,4")
    parser.add_argument("--group", type=int, default=128)
    parser.add_argument("--label", default=None, help="bench/results/<label>/ (default: the device)")
    parser.add_argument("--out", type=Path, default=None, help="folder instead of bench/results/<label>/")
    args = parser.parse_args()
    args.out = args.out or HERE / "results" / (args.label or args.device)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if args.device == "cuda":
        int8_shapes = [
            (16, 4096, 4096),
            (2048, 4096, 4096),
            (2048, 4096, 11008),
            (8192, 4096, 4096),
            (8192, 8192, 8192),
        ]
        lowbit_shapes = [
            (1, 4096, 4096),
            (1, 4096, 11008),
            (4, 4096, 11008),
            (16, 4096, 11008),
            (2048, 4096, 4096),
        ]
        int8_dtype = lowbit_dtype = torch.bfloat16
        packed_shapes = [(1, 4096, 4096), (16, 4096, 4096), (1, 4096, 11008), (16, 4096, 11008)]
        name = torch.cuda.get_device_name()
    else:
        torch.set_num_threads(1)  # see leanlm.core.testing: the shared 2-core CPU punishes OpenMP barriers
        int8_shapes = [(256, 1024, 1024), (2048, 2048, 2048)]
        lowbit_shapes = [(1, 2048, 2048), (16, 2048, 2048)]
        int8_dtype, lowbit_dtype = torch.bfloat16, torch.float32
        packed_shapes = [(1, 576, 1536), (1, 1536, 576), (1, 576, 49152), (1, 4096, 4096), (16, 4096, 4096)]
        name = f"cpu ({platform.machine()}, {torch.get_num_threads()} thread)"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "absent"
    bits = [int(b) for b in args.bits.split(",")]
    result = {
        "device": args.device,
        "device_name": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "int8": int8_rows(args.device, int8_shapes, int8_dtype, args.repeats),
        "lowbit": lowbit_rows(args.device, lowbit_shapes, bits, args.group, lowbit_dtype, args.repeats),
        "packed": packed_rows(args.device, packed_shapes, bits, 64, args.repeats),
    }
    save_section(args.out, f"kernels_{args.device}", result, markdown(result))


if __name__ == "__main__":
    main()
