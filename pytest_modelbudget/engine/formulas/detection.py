"""torchvision's detection ops. No multiply-accumulates (torchvision's ``_ops`` and FlopCounterMode
count none for them); their FLOPs by the rules of docs/FLOPS.md."""

from __future__ import annotations

from typing import Any

from .table import Cost, first_numel, register_cost


@register_cost("torchvision::roi_align")
def _roi_align(args: tuple, kwargs: dict, out: Any) -> Cost:
    # (input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned): every output
    # element averages sampling_ratio^2 bilinear samples, 8 FLOPs each (4 products, 3 sums, the
    # average). An adaptive ratio (<= 0) depends on the boxes' sizes: counted as 2, torchvision's
    # choice for its detection heads.
    ratio = args[5] if len(args) > 5 and args[5] > 0 else 2
    return Cost(0, 8 * ratio * ratio * first_numel(out))


@register_cost("torchvision::nms")
def _nms(args: tuple, kwargs: dict, out: Any) -> Cost:
    # The IoU of every pair of boxes, 12 FLOPs each (the intersection's corners and area, both
    # areas, the union, the ratio): a bound, greedy NMS skips boxes already suppressed.
    boxes = args[0].shape[0]
    return Cost(0, 12 * boxes * (boxes - 1) // 2)
