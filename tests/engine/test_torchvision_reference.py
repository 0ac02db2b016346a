"""Every classification model in torchvision against its published ``num_params`` and ``_ops``.

torchvision is not a CI dependency (PyPI's wheel needs a matching torch build): this module skips
without it. Run it by hand as the README says.
"""

from __future__ import annotations

import pytest
import torch

from ..helpers import measure_checked

models = pytest.importorskip("torchvision.models")


def _weights():
    for name in models.list_models(module=models):
        for weights in models.get_model_weights(name):
            yield pytest.param(name, weights, id=str(weights))


@pytest.mark.parametrize("name, weights", list(_weights()))
def test_published_params_and_gmacs(name, weights):
    crop = weights.transforms().crop_size[0]
    config = {}
    if name.startswith("vit_"):
        config["image_size"] = crop
    if name == "googlenet":  # published without the auxiliary heads the untrained builder adds
        config.update(aux_logits=False, init_weights=False)
    try:
        with torch.device("meta"):
            model = models.get_model(name, **config)
    except NotImplementedError:  # builders that compute their shapes with real tensors (regnet)
        model = models.get_model(name, **config)
    stats = measure_checked(model, input_size=(1, 3, crop, crop))
    assert stats.params == weights.meta["num_params"]
    assert round(stats.macs / 1e9, 3) == weights.meta["_ops"]
    assert stats.uncounted_ops == {}
