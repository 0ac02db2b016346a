"""Named GPUs for ``roofline_time``: memory bandwidth and dense peak throughput per compute dtype,
from the vendors' datasheets. Plain data (no torch): the budget file validates names against it.

Peaks are dense (NVIDIA's datasheets print tensor-core figures "with sparsity", twice the dense
ones; the dense half is used). ``fp32`` is the CUDA cores' rate, which every op that is not a
matmul or convolution runs at; ``tf32``, ``bf16``, ``fp16``, ``fp8`` and ``int8`` are tensor-core
rates for matmuls and convolutions in that dtype. A dtype a GPU has no tensor cores for runs at
its ``fp32`` rate.
"""

from __future__ import annotations

from dataclasses import dataclass

T = 10**12


@dataclass(frozen=True)
class Gpu:
    name: str
    #: bytes per second
    bandwidth: float
    #: compute dtype -> FLOP/s (dense); fp32 is required
    peaks: dict[str, float]
    source: str = ""
    #: Ampere or newer: PyTorch's flash attention kernel runs (the CUDA simulation picks it).
    flash_attention: bool = True
    #: The major CUDA compute capability (9: Hopper), which sizes PyTorch's cuBLAS workspace;
    #: None where unknown (a GPU of the budget file's own).
    capability: int | None = None
    #: Bytes of device memory on the datasheet (GiB: "80GB" HBM is 80 GiB); None where unknown.
    #: The driver keeps some (an 80 GB H100 reports about 79.1 GiB) and the CUDA context more.
    memory: int | None = None

    def peak(self, dtype: str, tensor_cores: bool) -> float:
        if not tensor_cores:
            return self.peaks["fp32"]
        return self.peaks.get(dtype, self.peaks["fp32"])


GIB = 2**30


def _gpu(name: str, bandwidth_tb: float, source: str, capability: int, memory_gb: int, **peaks_t: float) -> Gpu:
    peaks = {dtype: value * T for dtype, value in peaks_t.items()}
    return Gpu(name, bandwidth_tb * T, peaks, source, capability=capability, memory=memory_gb * GIB)


GPUS: dict[str, Gpu] = {
    gpu.name: gpu
    for gpu in (
        _gpu(
            "h100-sxm",
            3.35,
            "NVIDIA H100 Tensor Core GPU datasheet (SXM)",
            capability=9,
            memory_gb=80,
            fp32=67,
            tf32=494.5,
            bf16=989.5,
            fp16=989.5,
            fp8=1979,
            int8=1979,
        ),
        _gpu(
            "h100-pcie",
            2.0,
            "NVIDIA H100 Tensor Core GPU datasheet (PCIe)",
            capability=9,
            memory_gb=80,
            fp32=51,
            tf32=378,
            bf16=756,
            fp16=756,
            fp8=1513,
            int8=1513,
        ),
        _gpu(
            "h200",
            4.8,
            "NVIDIA H200 Tensor Core GPU datasheet (SXM)",
            capability=9,
            memory_gb=141,
            fp32=67,
            tf32=494.5,
            bf16=989.5,
            fp16=989.5,
            fp8=1979,
            int8=1979,
        ),
        _gpu(
            "b200",
            8.0,
            "NVIDIA HGX B200 datasheet, per GPU",
            capability=10,
            memory_gb=180,
            fp32=75,
            tf32=1100,
            bf16=2250,
            fp16=2250,
            fp8=4500,
            int8=4500,
        ),
        _gpu(
            "a100-sxm-40gb",
            1.555,
            "NVIDIA A100 Tensor Core GPU datasheet (40GB SXM)",
            capability=8,
            memory_gb=40,
            fp32=19.5,
            tf32=156,
            bf16=312,
            fp16=312,
            int8=624,
        ),
        _gpu(
            "a100-sxm-80gb",
            2.039,
            "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM)",
            capability=8,
            memory_gb=80,
            fp32=19.5,
            tf32=156,
            bf16=312,
            fp16=312,
            int8=624,
        ),
        _gpu(
            "l4",
            0.3,
            "NVIDIA L4 Tensor Core GPU datasheet",
            capability=8,
            memory_gb=24,
            fp32=30.3,
            tf32=60,
            bf16=121,
            fp16=121,
            fp8=242.5,
            int8=242.5,
        ),
        _gpu(
            "a10g",
            0.6,
            "NVIDIA A10 Tensor Core GPU datasheet (AWS's A10G: same memory, tensor peaks as A10)",
            capability=8,
            memory_gb=24,
            fp32=31.2,
            tf32=62.5,
            bf16=125,
            fp16=125,
            int8=250,
        ),
        Gpu(
            "t4",
            0.32 * T,
            {"fp32": 8.1 * T, "fp16": 65 * T, "int8": 130 * T},
            "NVIDIA T4 Tensor Core GPU datasheet (Turing: no bf16 or tf32 tensor cores, no flash attention)",
            flash_attention=False,
            capability=7,
            memory=16 * GIB,
        ),
        _gpu(
            "rtx-4090",
            1.008,
            "NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090 (FP32 accumulate)",
            capability=8,
            memory_gb=24,
            fp32=82.6,
            tf32=82.6,
            bf16=165.2,
            fp16=165.2,
            fp8=330.3,
            int8=660.6,
        ),
    )
}

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
