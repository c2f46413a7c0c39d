"""The PacGAN authors' BatchNorm refresh, applied to a finished run's last checkpoint.

    python experiments/batchnorm_refresh.py ring8_pacgan <run folder or last.ckpt> [--model gan] [--updates 50]

The authors' code (fjxmlzn/PacGAN), before each evaluation, applies 50 more running-statistics updates to the
generator's BatchNorm layers (training mode, weights frozen, batches of 100 latents); this codebase evaluates with the
statistics training left (experiments/PROTOCOLS.md). Training is untouched either way (in training mode BatchNorm
uses the batch's statistics), so the refresh can be applied afterwards to the weights a run ended with: this script
evaluates a checkpoint's generator both ways on the same 2,500 latents, with the table's mode rules
(callbacks.ModeCoverageMetric), and prints modes, HQ %, KL and spread of each, averaged over `--draws` latent sets.

For the tables whose experiments/published.yaml entry has `batchnorm_refresh` (the PacGAN-protocol ones),
`reproduce.py` records the same comparison in each finished run's result.json (`record`: one set of 2,500 latents,
seed 2333 as in the authors' code, from the run's last checkpoint while it is on disk), and the table shows the
refreshed final figures beside the published ones.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.configs import EXPERIMENTS, PROTOCOL, resolve  # noqa: E402
from models.checkpoints import import_class  # noqa: E402

RECORD_KEY = "batchnorm_refresh"


def build(node):
    """The object a resolved config node ({class_path, init_args}) describes, nested nodes (also in lists) first."""
    if isinstance(node, list):
        return [build(v) for v in node]
    if not (isinstance(node, dict) and "class_path" in node):
        return node
    args = {k: build(v) for k, v in (node.get("init_args") or {}).items()}
    return import_class(node["class_path"])(**args)


def load(configs: Sequence[Path], checkpoint: Path, overrides: Sequence[str] = ()):
    """The LightningModule and the datamodule the configs describe, with the checkpoint's weights and buffers."""
    config = resolve(list(configs), list(overrides))
    model, data = build(config["model"]), build(config["data"])
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    return model.eval(), data, state


def refreshed_copy(model, updates: int, batch: int, seed: int = 0):
    """A copy of `model` whose generator's running statistics took `updates` more updates (training mode, no
    gradients, `batch` latents from the model's own latent distribution per block: a PacGAN of packing m takes
    m x `batch`, its BatchNorm normalising each block on its own, as the authors' code calls G m times on `batch`);
    in inference mode."""
    refreshed = copy.deepcopy(model)
    refreshed.generator.train()
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(updates):
            refreshed.generate(refreshed.sample_latent(batch * getattr(model, "packing", 1), rng=rng))
    return refreshed.eval()


def figures(model, data, latents: torch.Tensor) -> dict[str, float]:
    """modes, HQ %, KL and spread of the samples `model` makes from `latents`, by the table's mode rules."""
    from callbacks import ModeCoverageMetric

    metric = ModeCoverageMetric(torch.as_tensor(data.centers, dtype=torch.float32), data.std,
                                getattr(data, "weights", None))
    with torch.no_grad():
        metric.update(model.generate(latents))
    return {k: float(v) for k, v in metric.compute().items()}


def compare(configs: Sequence[Path], checkpoint: Path, overrides: Sequence[str] = (), updates: int = 50,
            batch: int = 100, latent_seeds: Sequence[int] = (2333,), num_samples: int = 2500) -> dict:
    """{"left": figures with the statistics training left, "refreshed": after `updates`}, each the mean over one set
    of `num_samples` latents per seed in `latent_seeds`; and the checkpoint's epoch and global step."""
    model, data, state = load(configs, checkpoint, overrides)
    refreshed = refreshed_copy(model, updates, batch)
    out = {"left": [], "refreshed": []}
    for seed in latent_seeds:
        latents = model.sample_latent(num_samples, rng=torch.Generator().manual_seed(seed))
        out["left"].append(figures(model, data, latents))
        out["refreshed"].append(figures(refreshed, data, latents))
    mean = {k: {m: sum(f[m] for f in v) / len(v) for m in v[0]} for k, v in out.items()}
    return {**mean, "epoch": state.get("epoch"), "global_step": state.get("global_step")}


def last_checkpoint(folder: Path) -> Optional[Path]:
    found = sorted(Path(folder).glob("runs/*/version_*/checkpoints/last.ckpt"))
    return found[-1] if found else None


def record(run, folder: Path, result: dict, settings: dict) -> bool:
    """Adds the refresh comparison to a finished run's result (and its result.json) from its last checkpoint, with
    `settings` (published.yaml's: updates, batch, latent_seed, samples); False (nothing done) when the run did not
    finish, already has it, or its checkpoint is gone."""
    checkpoint = last_checkpoint(folder)
    if result.get("status") != "ok" or RECORD_KEY in result or checkpoint is None:
        return False
    updates, batch = int(settings.get("updates", 50)), int(settings.get("batch", 100))
    seed, samples = int(settings.get("latent_seed", 2333)), int(settings.get("samples", 2500))
    found = compare(run.configs, checkpoint, run.overrides, updates, batch, [seed], samples)
    result[RECORD_KEY] = {"updates": updates, "batch": batch, "latent_seed": seed, "samples": samples,
                          "checkpoint": str(checkpoint.relative_to(folder)), "epoch": found["epoch"],
                          "global_step": found["global_step"], "metrics": found["refreshed"],
                          "metrics_left": found["left"]}
    path = Path(folder) / "result.json"
    if path.is_file():
        path.write_text(json.dumps(result, indent=1))
    return True


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table")
    parser.add_argument("checkpoint", type=Path, help="a last.ckpt, or a run folder holding one")
    parser.add_argument("--model", default="gan")
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--draws", type=int, default=10, help="sets of 2,500 latents (seeds 2333, 2334, ...)")
    args = parser.parse_args(argv)
    path = last_checkpoint(args.checkpoint) if args.checkpoint.is_dir() else args.checkpoint
    if path is None or not path.is_file():
        raise SystemExit(f"checkpoint: no last.ckpt at {args.checkpoint} (a file, or runs/*/version_*/checkpoints/ "
                         "under a run folder)")
    configs = [EXPERIMENTS / args.table / PROTOCOL, EXPERIMENTS / args.table / f"{args.model}.yaml"]
    found = compare(configs, path, (), args.updates, args.batch, range(2333, 2333 + args.draws))
    print(f"{args.table} {args.model}, {path} (epoch {found['epoch']}), mean over {args.draws} sets of 2,500 latents:")
    for label, key in (("statistics left by training", "left"), (f"after {args.updates} refresh updates", "refreshed")):
        f = found[key]
        print(f"  {label:<30} modes {f['modes']:.2f}  HQ {f['hq']:.1f}  KL {f['kl']:.3f}  spread {f['spread']:.3f}")


if __name__ == "__main__":
    main()
