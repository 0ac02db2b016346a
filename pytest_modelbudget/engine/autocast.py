"""Autocast as a GPU runs it, on the CPU tensors an estimate runs on.

``torch.autocast("cuda")`` and ``torch.autocast("cpu")`` cast different ops: on CUDA LayerNorm,
softmax, ``exp`` and the losses run in float32 (their outputs, saved for backward, twice the
bytes), and ``cross_entropy`` is left to decompose (its log-softmax made in float32 from the
reduced-precision logits, no float32 copy of them); on the CPU LayerNorm stays in the autocast
dtype and cross-entropy copies its input to float32. An estimate for CUDA made with the CPU's
lists is then off exactly where large models spend their memory.

The policies are PyTorch's own (``aten/src/ATen/autocast_mode.h``, the ``AT_FORALL_*`` lists,
``autocast_mode.cpp`` for the CPU's), held in one table, ``CUDA_POLICIES``. While an estimate for
CUDA runs, ``cuda_autocast`` replaces the kernels of the ``AutocastCPU`` dispatch key with ones
that apply the CUDA policy (and passes through the ops only the CPU casts), then puts PyTorch's
back. Casts of float32 leaf weights to the reduced dtype are cached for the autocast region, as
``cached_cast`` does: the copies live until the region ends.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch

aten = torch.ops.aten

LOWER = "lower_precision_fp"
FP32 = "fp32"
FP32_SET_OPT_DTYPE = "fp32_set_opt_dtype"
FP32_APPEND_DTYPE = "fp32_append_dtype"
PROMOTE = "promote"
BANNED = "banned"


def _table(policy: str, names: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), policy)


#: AutocastCUDA's kernels: ``op`` or ``op.overload`` (the default overload when none is named).
CUDA_POLICIES: dict[str, str] = {
    **_table(
        LOWER,
        """_convolution.deprecated _convolution conv1d conv2d conv3d conv_tbc conv_transpose1d
        conv_transpose2d.input conv_transpose3d.input convolution prelu addmm addmv addr matmul einsum mm mv
        linalg_vecdot linear addbmm baddbmm bmm chain_matmul linalg_multi_dot _thnn_fused_lstm_cell
        _thnn_fused_gru_cell lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell _scaled_dot_product_flash_attention
        scaled_dot_product_attention cudnn_convolution cudnn_convolution_transpose""",
    ),
    **_table(
        FP32,
        """acos asin cosh erfinv exp expm1 log log10 log2 log1p reciprocal rsqrt sinh tan pow.Tensor_Scalar
        pow.Tensor_Tensor pow.Scalar softplus layer_norm native_layer_norm rms_norm group_norm frobenius_norm.dim
        nuclear_norm nuclear_norm.dim cosine_similarity poisson_nll_loss cosine_embedding_loss nll_loss nll_loss2d
        hinge_embedding_loss kl_div l1_loss smooth_l1_loss huber_loss mse_loss margin_ranking_loss
        multilabel_margin_loss soft_margin_loss triplet_margin_loss multi_margin_loss
        binary_cross_entropy_with_logits dist pdist cdist renorm logsumexp upsample_nearest1d
        _upsample_nearest_exact1d upsample_nearest2d _upsample_nearest_exact2d upsample_nearest3d
        _upsample_nearest_exact3d upsample_linear1d upsample_bilinear2d _upsample_bilinear2d_aa
        upsample_trilinear3d upsample_bicubic2d _upsample_bicubic2d_aa""",
    ),
    **_table(
        FP32_SET_OPT_DTYPE,
        """prod prod.dim_int softmax.int log_softmax.int cumprod cumsum linalg_vector_norm
        linalg_matrix_norm linalg_matrix_norm.str_ord sum sum.dim_IntList""",
    ),
    **_table(FP32_APPEND_DTYPE, "norm.Scalar norm.ScalarOpt_dim"),
    **_table(PROMOTE, "addcdiv addcmul atan2 bilinear cross dot vdot grid_sampler index_put tensordot scatter_add"),
    "binary_cross_entropy": BANNED,
}

#: AutocastCPU's kernels not in the CUDA table: run through as CUDA runs them, uncast.
CPU_ONLY = set(
    _table(
        "",
        """conv1d.padding conv2d.padding conv3d.padding _addmm_activation mkldnn_rnn_layer
        _native_multi_head_attention avg_pool3d grid_sampler polar quantile quantile.scalar nanquantile
        nanquantile.scalar stft stft.center grid_sampler_2d _grid_sampler_2d_cpu_fallback grid_sampler_3d trace
        view_as_complex cholesky cholesky_inverse cholesky_solve inverse lu_solve orgqr ormqr pinverse max_pool3d
        max_unpool2d max_unpool3d adaptive_avg_pool3d reflection_pad1d reflection_pad2d replication_pad1d
        replication_pad2d replication_pad3d cross_entropy_loss ctc_loss.IntList ctc_loss.Tensor fft_fft fft_ifft
        fft_fft2 fft_ifft2 fft_fftn fft_ifftn fft_rfft fft_irfft fft_rfft2 fft_irfft2 fft_rfftn fft_irfftn fft_hfft
        fft_ihfft linalg_cond linalg_cond.p_str linalg_matrix_rank linalg_matrix_rank.tol_tensor
        linalg_matrix_rank.atol_rtol_tensor linalg_matrix_rank.atol_rtol_float linalg_solve linalg_cholesky
        linalg_svdvals linalg_eigvals linalg_eigvalsh linalg_inv linalg_householder_product linalg_tensorinv
        linalg_tensorsolve fake_quantize_per_tensor_affine geqrf _lu_with_info qr svd triangular_solve
        fractional_max_pool2d fractional_max_pool3d adaptive_max_pool3d multilabel_margin_loss_forward linalg_qr
        linalg_cholesky_ex linalg_svd linalg_eig linalg_eigh linalg_lstsq linalg_inv_ex stack cat index_copy""",
    )
) - set(CUDA_POLICIES)

_BANNED_MESSAGE = (
    "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast (CUDA's autocast refuses "
    "them): use binary_cross_entropy_with_logits or BCEWithLogitsLoss"
)


def _overload(name: str) -> Any:
    op, _, overload = name.partition(".")
    packet = getattr(aten, op, None)
    return None if packet is None else getattr(packet, overload or "default", None)


class _Casts:
    """One autocast region's casts: ``cached_cast``'s rules, its cache of float32 weights."""

    def __init__(self, lower: torch.dtype) -> None:
        self.lower = lower
        self.cache: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}

    @staticmethod
    def eligible(value: Any) -> bool:
        return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64

    def cast(self, dtype: torch.dtype, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return type(value)(self.cast(dtype, item) for item in value)
        if not self.eligible(value) or value.dtype == dtype:
            return value
        cacheable = (
            dtype == self.lower
            and value.dtype == torch.float32
            and value.requires_grad
            and value.is_leaf
            and not value._is_view()
            and torch.is_autocast_cache_enabled()
        )
        if not cacheable:
            return value.to(dtype)
        found = self.cache.get(id(value))
        if found is not None and found[0]() is value:
            return found[1]
        casted = value.to(dtype)
        self.cache[id(value)] = (weakref.ref(value), casted)
        return casted

    def widest(self, values: Any) -> torch.dtype:
        chosen = self.lower
        for value in values:
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if self.eligible(item) and item.dtype != self.lower:
                    chosen = torch.float32
        return chosen


_NO_AUTOCAST = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def _kernel(op: Any, policy: str, casts: _Casts) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_NO_AUTOCAST):
            cast_to = {LOWER: casts.lower, FP32: torch.float32}.get(policy)
            if policy == PROMOTE:
                cast_to = casts.widest([*args, *kwargs.values()])
            if cast_to is not None:
                args, kwargs = casts.cast(cast_to, args), {k: casts.cast(cast_to, v) for k, v in kwargs.items()}
            elif policy == FP32_SET_OPT_DTYPE:
                if args and casts.eligible(args[0]) and kwargs.get("dtype") is None:
                    kwargs = {**kwargs, "dtype": torch.float32}
            elif policy == FP32_APPEND_DTYPE:
                # norm without a dtype: redispatched to its overload with one, as float32.
                dtype = torch.float32 if casts.eligible(args[0]) else args[0].dtype
                self, p, *rest = (*args, kwargs.pop("p", 2)) if len(args) == 1 else args
                target = aten.norm.ScalarOpt_dtype if op is aten.norm.Scalar else aten.norm.ScalarOpt_dim_dtype
                return target(self, p, *rest, **kwargs, dtype=dtype)
            elif policy == BANNED:
                raise RuntimeError(_BANNED_MESSAGE)
            return op(*args, **kwargs)

    return run


class CudaAutocast(contextlib.AbstractContextManager[None]):
    """``torch.autocast`` to ``dtype`` with CUDA's op lists, on CPU (or fake CPU) tensors; entered
    as often as the step enters autocast (each micro-step, the prefill)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self._entered: list[tuple[torch.library.Library, _Casts, torch.autocast]] = []

    def __enter__(self) -> None:
        casts = _Casts(self.dtype)
        library = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():
            # PyTorch warns once that a kernel is overridden: that is the point, and it is undone.
            warnings.simplefilter("ignore")
            for name, policy in [*CUDA_POLICIES.items(), *((name, "") for name in sorted(CPU_ONLY))]:
                op = _overload(name)
                if op is not None:
                    library.impl(name, _kernel(op, policy, casts), "AutocastCPU")
        region = torch.autocast("cpu", dtype=self.dtype)
        region.__enter__()
        self._entered.append((library, casts, region))

    def __exit__(self, *exc: object) -> None:
        library, casts, region = self._entered.pop()
        try:
            region.__exit__(*exc)
        finally:
            library._destroy()
            casts.cache.clear()


def autocast_for(target: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """The autocast a step on ``target`` runs under, where its tensors are CPU (or fake CPU) ones:
    the CPU's own, or CUDA's emulated."""
    if dtype is None:
        return contextlib.nullcontext()
    if target == "cuda":
        return CudaAutocast(dtype)
    return torch.autocast("cpu", dtype=dtype)
