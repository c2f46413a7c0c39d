"""A Weights & Biases logger that never prompts for a login.

`mode="auto"` (the default) logs online when W&B credentials exist (WANDB_API_KEY, or a
`wandb login` entry in ~/.netrc) and offline otherwise, then says how to upload the run
(`wandb sync <run folder>`, said once). WANDB_MODE, when set, wins over everything (e.g. WANDB_MODE=offline
on a cluster node without network, WANDB_MODE=disabled to switch W&B off).
"""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info

_MODES = ("auto", "online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    """True if W&B could log in without asking: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """The W&B mode to use: WANDB_MODE if set, else `mode`, with "auto" made online/offline."""
    if mode not in _MODES:
        raise ValueError(f"W&B mode must be one of {_MODES}; got {mode!r}")
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        return {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
    if mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    return mode


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger with `mode="auto"`: online with credentials, offline without.

    All other arguments are Lightning's (`project`, `name`, `group`, `save_dir`, `tags`, ...).
    """

    def __init__(self, mode: str = "auto", **kwargs):
        self.mode = resolve_wandb_mode(mode)
        if self.mode == "offline":
            kwargs["offline"] = True
            if "settings" not in kwargs:  # W&B's own closing lines would repeat the upload hint printed here
                import wandb

                kwargs["settings"] = wandb.Settings(quiet=True)
        elif self.mode == "disabled":
            kwargs["mode"] = "disabled"
        super().__init__(**kwargs)

    def finalize(self, status: str) -> None:
        super().finalize(status)
        # once per run: a fit's end and the evaluation of its final weights both finalize the logger
        if self.mode == "offline" and self._experiment is not None and not getattr(self, "_sync_hint_shown", False):
            self._sync_hint_shown = True
            run_dir = os.path.dirname(self._experiment.dir)  # .../wandb/offline-run-<time>-<id>
            rank_zero_info(f"W&B logged offline (no credentials found) to {run_dir}\n"
                           f"  upload it later with: wandb sync {run_dir}")
