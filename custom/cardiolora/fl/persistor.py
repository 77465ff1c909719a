"""The server's model persistor: the base model ``W_0`` built from the bundle, saved global models.

Both jobs (Rate-My-LoRA / FedPETuning and full-weight FedAvg) use it as the server component
``persistor``: the network comes from the bundle's ``network_def`` for the job's profile, and its
weights from the server's local config (``pretrained_path`` in
``<server workspace>/local/cardiolora_site.json`` or ``$CARDIOLORA_SITE_CONFIG``), so the job folder
holds no machine path.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import ModelLearnable, ModelLearnableKey, make_model_learnable
from nvflare.app_common.abstract.model_persistor import ModelPersistor

from cardiolora.atomic import atomic_torch_save
from cardiolora.fl.network import bundle_network
from cardiolora.fl.protocol import to_numpy, to_torch
from cardiolora.fl.site_config import load_site_config
from cardiolora.networks import load_weights, plain_state_dict

__all__ = ["BundleModelPersistor", "load_base_weights"]


def load_base_weights(profile: str, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``W_0``: the bundle's plain network for `profile` with the weights of `path`.

    Args:
        profile: run profile.
        path: a checkpoint readable by :func:`cardiolora.networks.load_weights`.

    Returns:
        The plain state dict (float32, CPU).

    Raises:
        ValueError: if the weights do not fit the profile's network (names the file).
        FileNotFoundError: if `path` does not exist.
    """
    net = bundle_network(profile, 0)
    load_weights(net, path)
    return plain_state_dict(net)


class BundleModelPersistor(ModelPersistor):
    """Load ``W_0`` from the server's local config; save each global model into the run folder.

    Args:
        profile: run profile of the job (the bundle's network for it).
        model_file: file name of the saved global model in the server's run folder.
    """

    _always_serialize_args = ("profile",)

    def __init__(self, profile: str = "quick", model_file: str = "global_model.pt") -> None:
        super().__init__()
        self.profile = profile
        self.model_file = model_file

    def _run_dir(self, fl_ctx: FLContext) -> Path:
        ws = fl_ctx.get_engine().get_workspace()
        return Path(ws.get_run_dir(fl_ctx.get_job_id()))

    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        ws = fl_ctx.get_engine().get_workspace()
        cfg = load_site_config("server", required=("pretrained_path",), workspace=ws.get_root_dir())
        weights = load_base_weights(self.profile, cfg.pretrained_path)
        self.log_info(fl_ctx, f"W_0 from {cfg.pretrained_path} (profile {self.profile}, {len(weights)} tensors)")
        return make_model_learnable(weights=to_numpy(weights), meta_props={})

    def save_model(self, model: ModelLearnable, fl_ctx: FLContext) -> None:
        path = self._run_dir(fl_ctx) / self.model_file
        atomic_torch_save(to_torch(model[ModelLearnableKey.WEIGHTS]), path)
        self.log_info(fl_ctx, f"global model saved: {path}")
