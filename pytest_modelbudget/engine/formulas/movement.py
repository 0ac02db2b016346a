"""Ops that move, select or create data without arithmetic a user would count: free."""

from __future__ import annotations

from .table import register_free

register_free(
    "_to_copy", "copy", "copy_", "clone", "contiguous", "cat", "stack", "empty", "empty_like",
    "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "new_zeros",
    "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "fill", "fill_", "zero_",
    "arange", "linspace", "logspace", "eye", "scalar_tensor", "lift_fresh", "lift_fresh_copy",
    "index", "index_select", "gather", "scatter", "slice_scatter", "select_scatter",
    "diagonal_scatter", "as_strided_scatter", "index_put", "index_put_", "masked_fill",
    "masked_fill_", "where", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d",
    "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
    "repeat", "repeat_interleave", "flip", "roll", "tril", "triu", "tril_", "triu_",
    "embedding", "bernoulli", "bernoulli_", "rand", "rand_like", "randn", "randn_like",
    "randint", "randint_like", "randperm", "normal", "normal_", "uniform_", "detach",
    "alias", "_unsafe_view", "_local_scalar_dense", "resize_", "set_", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "_unsafe_index",
    "unfold", "im2col", "col2im", "one_hot", "_assert_async", "_assert_tensor_metadata",
    "_functional_assert_async", "sym_constrain_range_for_size", "_make_dep_token",
    "record_stream", "_efficientzerotensor", "sort", "topk", "nonzero", "masked_select",
    "bitwise_not", "logical_not", "unique_consecutive", "_unique2", "searchsorted",
    "bucketize", "tensor_split", "split_with_sizes_copy", "cat_", "item", "unsafe_split",
    "unsafe_split_with_sizes", "_nested_tensor_from_mask_left_aligned", "_pack_padded_sequence",
    "_pad_packed_sequence", "max_unpool2d", "max_unpool3d", "unsafe_chunk",
)
