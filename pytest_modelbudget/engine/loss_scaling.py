"""The loss scaling that float16 training runs with: ``torch.amp.GradScaler``'s tensors, made and
freed where it makes and frees them.

A float16 training loop is ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()``:
the scale and its growth tracker live from the first ``scale`` on, the scaled loss through
backward, and ``step`` unscales the gradients in place after making an inverse scale (through a
float64 reciprocal) and a found-inf flag that ``update`` lets go. The real scaler reads the flag
with ``.item()`` to skip a step that overflowed, which fake tensors cannot answer: the step is
taken, as it is on every step that does not overflow.
"""

from __future__ import annotations

import torch

from ..errors import MeasureError

#: GradScaler's defaults.
INIT_SCALE = 2.0**16
GROWTH_FACTOR, BACKOFF_FACTOR, GROWTH_INTERVAL = 2.0, 0.5, 2000


class LossScaler:
    def __init__(self) -> None:
        self.scale_: torch.Tensor | None = None
        self.growth_tracker: torch.Tensor | None = None
        self.found_inf: torch.Tensor | None = None

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        if self.scale_ is None:
            self.scale_ = torch.full((), INIT_SCALE, dtype=torch.float32, device=loss.device)
            self.growth_tracker = torch.full((), 0, dtype=torch.int32, device=loss.device)
        return loss * self.scale_

    def step(self, optimizer: torch.optim.Optimizer, trained: list[torch.Tensor]) -> None:
        """``scaler.step(optimizer)``: unscale the gradients of ``trained`` (the optimizer's
        parameters) in place, then the optimizer's step."""
        assert self.scale_ is not None
        inv_scale = self.scale_.double().reciprocal().float()
        self.found_inf = torch.full((), 0.0, dtype=torch.float32, device=self.scale_.device)
        grads: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        with torch.no_grad():
            for param in trained:
                if param.grad is None:
                    continue
                if param.grad.dtype == torch.float16:
                    raise MeasureError(
                        "autocast=torch.float16 in training scales the loss with GradScaler, which refuses float16 "
                        "gradients (ValueError: Attempting to unscale FP16 gradients): keep the weights in float32 "
                        "under float16 autocast, or use torch.bfloat16"
                    )
                grads.setdefault((param.grad.device, param.grad.dtype), []).append(param.grad)
            for group_grads in grads.values():
                torch._amp_foreach_non_finite_check_and_unscale_(group_grads, self.found_inf, inv_scale)
        del inv_scale
        optimizer.step()

    def update(self) -> None:
        assert self.scale_ is not None and self.growth_tracker is not None and self.found_inf is not None
        torch._amp_update_scale_(
            self.scale_, self.growth_tracker, self.found_inf, GROWTH_FACTOR, BACKOFF_FACTOR, GROWTH_INTERVAL
        )
        self.found_inf = None
