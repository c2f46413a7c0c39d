"""Training cost of every model: Lightning loop against a plain PyTorch loop, interleaved.

    OMP_NUM_THREADS=1 python experiments/benchmark.py experiments/ring8/[!p]*.yaml --out benchmark.md
    # a 32-px image config, offline: the CIFAR-10 configs on a folder of random PNGs
    OMP_NUM_THREADS=1 python experiments/benchmark.py experiments/cifar10/[!p]*.yaml --random-images /tmp/png32

A model's config is composed on its table's protocol.yaml as train.py composes it (experiments/configs.py).

For each config it builds the model and datamodule exactly as `train.py fit` does and measures,
in one process and interleaved chunk by chunk (so a noisy machine slows both alike):
- the Lightning loop (`GANBase.training_step` under a `Trainer`, no logger, checkpoints or
  validation): chunks of `--chunk` batches, timed between `on_train_batch_start` of the chunk's
  first batch and the end of its last;
- a plain PyTorch loop written here that does the identical math: the same networks (a deep
  copy), the model's own loss functions (`discriminator_loss`, `generator_loss`: the same
  arithmetic), the same Adam optimisers, batches from the same DataLoader, the same order of D
  and G steps, and `requires_grad` switched off on the network that is not stepping (what
  `toggled_optimizer` does). Each plain chunk runs right after a Lightning chunk.

Reported per config: ms per batch and per generator step (median over chunks), generator steps
and samples per second, floating-point operations per batch (torch.utils.flop_counter on the plain
loop) and the rate the Lightning loop achieves, also as a share of the machine's float32 matmul rate
measured in the same process, the Lightning/plain ratio, the cost of one evaluation by the config's
callbacks as a percentage of the training time between two evaluations (the config's
`check_val_every_n_epoch` epochs of training batches), and peak memory (CUDA peak allocated on GPU; the process's peak RSS on
CPU, which only grows, so read it as an upper bound). The table is printed and written to
`--out` (Markdown).
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402
from experiments.configs import compose_args  # noqa: E402


class PlainLoop:
    """The loop a researcher would write by hand, on a deep copy of `model`."""

    def __init__(self, model, loader):
        self.model = copy.deepcopy(model)
        m = self.model
        betas = tuple(m.hparams.betas)
        self.opt_g = torch.optim.Adam(m.generator_parameters(), lr=m.hparams.g_lr, betas=betas)
        self.opt_d = torch.optim.Adam(m.discriminator_parameters(), lr=m.hparams.d_lr, betas=betas)
        if hasattr(m, "_unroll_optimizer"):
            m._unroll_optimizer = self.opt_d
        m.noise = torch.Generator(device=m.device).manual_seed(0)
        self.loader, self.iterator, self.batches = loader, iter(loader), 0
        self.g_params, self.d_params = list(m.generator_parameters()), list(m.discriminator_parameters())

    def _next(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def _step(self, opt, trainable, frozen, loss_fn, *args):
        for p in frozen:
            p.requires_grad_(False)
        loss, _ = loss_fn(*args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for p in frozen:
            p.requires_grad_(True)

    def run(self, n: int) -> None:
        m = self.model
        for _ in range(n):
            real = m.unpack_batch(self._next()).to(m.device)
            g_now = (self.batches + 1) % m.n_critic == 0
            fresh = g_now and m.hparams.get("fresh_generator_latents", False)
            z_d = m.sample_latent(real.shape[0], rng=m.noise)
            with torch.set_grad_enabled(g_now and not fresh):
                fake = m.generate(z_d)
            z_g = m.sample_latent(real.shape[0], rng=m.noise) if fresh else z_d

            def g_step():
                self._step(self.opt_g, self.g_params, self.d_params, m.generator_loss, real,
                           m.generate(z_g) if fresh else fake, z_g)

            g_first = m.generator_steps_first()
            if g_now and g_first:
                g_step()
            self._step(self.opt_d, self.d_params, self.g_params, m.discriminator_loss, real, fake.detach(), z_d)
            if g_now and not g_first:
                g_step()
            self.batches += 1


class _Interleave(L.Callback):
    """Times Lightning chunks of `chunk` batches and runs a plain chunk after each one."""

    def __init__(self, plain: PlainLoop, chunk: int, warmup: int):
        self.plain, self.chunk, self.warmup = plain, chunk, warmup
        self.lightning_ms, self.plain_ms, self._start = [], [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        i = pl_module.d_steps
        if i >= self.warmup and (i - self.warmup) % self.chunk == 0:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        i = pl_module.d_steps
        if i == self.warmup:
            self.plain.run(self.warmup)  # the plain loop's warm-up
        if self._start is not None and i > self.warmup and (i - self.warmup) % self.chunk == 0:
            self.lightning_ms.append(1e3 * (time.perf_counter() - self._start) / self.chunk)
            self._start = None
            t = time.perf_counter()
            self.plain.run(self.chunk)
            self.plain_ms.append(1e3 * (time.perf_counter() - t) / self.chunk)


def flops_per_batch(plain: PlainLoop, batches: int) -> float:
    """Floating-point operations of one batch of the plain loop (forward, backward and optimiser steps), counted
    by torch.utils.flop_counter over `batches` batches (a multiple of n_critic, so G steps are in the mean)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        plain.run(batches)
    return counter.get_total_flops() / batches


def matmul_gflops(device: torch.device, n: int = 1024, repeats: int = 20) -> float:
    """The machine's float32 matmul rate at this process's thread count: 2 n^3 flops per n x n product,
    median over `repeats` products (after a warm-up)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for i in range(repeats + 3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 3:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def parse_spec(spec: str) -> tuple[str, list[str]]:
    """"path.yaml@key=value,key=value" -> (path, ["--key", "value", ...]): a config with overrides."""
    config, _, rest = spec.partition("@")
    overrides = []
    for pair in filter(None, rest.split(",")):
        key, eq, value = pair.partition("=")
        if not eq:
            raise SystemExit(f"override {pair!r} in {spec!r} is not key=value")
        overrides += [f"--{key}", value]
    return config, overrides


def random_image_folder(folder: Path, size: int = 32, count: int = 1200) -> list[str]:
    """Writes `count` random RGB PNGs into `folder` (once) and returns the train.py arguments
    that train on them: a 32-px image benchmark that needs no download."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"{i:05d}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return ["--data", "datamodules.ImageFolder", "--data.init_args.root", str(folder),
            "--data.init_args.image_size", str(size), "--data.init_args.val_size", "100"]


def evaluation_interval(cli, datamodule) -> int | None:
    """Training batches between two evaluations in the config: check_val_every_n_epoch epochs, or
    an integer val_check_interval."""
    trainer = cli.trainer
    if isinstance(trainer.val_check_interval, int) and trainer.val_check_interval > 1:
        return trainer.val_check_interval
    per_epoch = getattr(datamodule, "batches_per_epoch", None)
    if per_epoch is None:
        datamodule.setup("fit")
        per_epoch = len(datamodule.train_dataloader())
    return (trainer.check_val_every_n_epoch or 1) * per_epoch


def cpu_cli(config: Path):
    """The LightningCLI `train.py fit` builds for `config` and its protocol, on CPU without a logger, not run; its
    datamodule set up for fitting. What the step-cost scripts (experiments/*_cost.py) time steps of."""
    cli = train.main(args=[*compose_args(Path(config)), "--trainer.logger", "false", "--trainer.accelerator", "cpu"],
                     run=False)
    cli.datamodule.setup("fit")
    return cli


def benchmark(spec: str, chunks: int, chunk: int, warmup: int, accelerator: str, extra: list[str] = (),
              eval_every: int | None = None, precision: str = "32-true") -> dict:
    config, overrides = parse_spec(spec)
    cli = train.main(args=[*compose_args(Path(config)), "--trainer.accelerator", accelerator, *overrides, *extra], run=False)
    model, datamodule = cli.model, cli.datamodule
    total = warmup + chunks * chunk
    eval_every = eval_every or evaluation_interval(cli, datamodule)
    if hasattr(datamodule, "batches_per_epoch"):
        datamodule.batches_per_epoch = max(datamodule.batches_per_epoch, total + 1)
    datamodule.setup("fit")
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    plain = PlainLoop(model.to(device), datamodule.train_dataloader())
    timer = _Interleave(plain, chunk, warmup)
    trainer = L.Trainer(max_steps=total + total // model.n_critic, accelerator=accelerator, devices=1, logger=False,
                        precision=precision,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[timer])
    trainer.fit(model, datamodule=datamodule)
    lightning_ms, plain_ms = statistics.median(timer.lightning_ms), statistics.median(timer.plain_ms)
    batch_size = getattr(datamodule, "batch_size", None) or 1
    # one evaluation by the config's own callbacks, against the training time between two
    eval_ms, eval_note = float("nan"), ""
    callbacks = [c for c in cli.trainer.callbacks if type(c).__module__.startswith("callbacks")]
    if callbacks and eval_every:
        import tempfile  # the callbacks' plots go to a throwaway folder, not the working directory

        evaluator = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
                              default_root_dir=tempfile.mkdtemp(prefix="benchmark-"),
                              enable_model_summary=False, callbacks=callbacks, limit_val_batches=1)
        try:
            evaluator.validate(model, datamodule=datamodule, verbose=False)  # warm-up
            t = time.perf_counter()
            evaluator.validate(model, datamodule=datamodule, verbose=False)
            eval_ms = 1e3 * (time.perf_counter() - t)
        except Exception as err:  # e.g. Inception weights that cannot be downloaded here
            eval_note = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            print(f"{spec}: evaluation not timed ({eval_note})", flush=True)
    per_g = model.n_critic
    flops = flops_per_batch(plain, per_g * 2)
    return {
        "gflop_batch": flops / 1e9, "gflops": flops / 1e9 / (lightning_ms / 1e3),
        "config": spec, "model": type(model).__name__,
        "lightning_ms_batch": lightning_ms, "plain_ms_batch": plain_ms, "ratio": lightning_ms / plain_ms,
        "lightning_ms_g": lightning_ms * per_g, "g_steps_per_s": 1e3 / (lightning_ms * per_g),
        "samples_per_s": 1e3 * batch_size / lightning_ms,
        "eval_pct": 100 * eval_ms / (eval_every * lightning_ms) if eval_every else float("nan"),
        "eval_note": eval_note, "eval_every": eval_every,
        "peak_mib": _peak_memory_mib(device), "chunks": len(timer.lightning_ms),
        "spread": (min(timer.lightning_ms) / lightning_ms, max(timer.lightning_ms) / lightning_ms),
    }


def render(rows: list[dict], baseline: str | None = None, matmul: float | None = None) -> str:
    base = next((r for r in rows if r["model"] == baseline), rows[0])
    lines = ["| config | model | Lightning ms / batch | plain ms / batch | Lightning / plain | ms / G step | "
             "x baseline G step | G steps / s | samples / s | eval % of training | peak MiB | GFLOP / batch | "
             "GFLOP/s (Lightning) | % of matmul rate |",
             "|" + " --- |" * 14]
    for r in rows:
        share = f"{100 * r['gflops'] / matmul:.0f}" if matmul else "n/a"
        lines.append(
            f"| {r['config']} | {r['model']} | {r['lightning_ms_batch']:.2f} | {r['plain_ms_batch']:.2f} | "
            f"{r['ratio']:.3f} | {r['lightning_ms_g']:.2f} | {r['lightning_ms_g'] / base['lightning_ms_g']:.2f} | "
            f"{r['g_steps_per_s']:.1f} | {r['samples_per_s']:.0f} | "
            f"{'n/a' if r['eval_pct'] != r['eval_pct'] else format(r['eval_pct'], '.2f')} | {r['peak_mib']:.0f} | "
            f"{r['gflop_batch']:.3f} | {r['gflops']:.1f} | {share} |")
    notes = [f"- {r['config']}: evaluation not timed: {r['eval_note']}" for r in rows if r.get("eval_note")]
    if matmul:
        notes.append(f"- matmul rate of this machine at this thread count: {matmul:.1f} GFLOP/s (float32 1024 x 1024 "
                     f"products, median of 20); FLOPs counted by torch.utils.flop_counter on the plain loop")
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="config paths, each optionally with overrides: "
                        "experiments/ring8/unrolled_gan.yaml@model.init_args.unrolled_steps=10")
    parser.add_argument("--args", nargs=argparse.REMAINDER, default=[],
                        help="train.py arguments for every config, e.g. --args --data datamodules.ImageFolder ...")
    parser.add_argument("--random-images", type=Path, metavar="DIR",
                        help="train on random 32-px PNGs written to DIR (an offline image benchmark; "
                             "use with the cifar10 configs)")
    parser.add_argument("--eval-every", type=int, metavar="BATCHES",
                        help="training batches between evaluations for the eval %% column (default: the config's)")
    parser.add_argument("--chunks", type=int, default=10, help="interleaved chunks per loop (default 10)")
    parser.add_argument("--chunk", type=int, default=30, help="batches per chunk (default 30)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--precision", default="32-true",
                        help="the Lightning loop's precision (bf16-mixed, 16-mixed); the plain loop stays in float32, "
                             "so the ratio then reads as the mixed-precision speed-up")
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    args = parser.parse_args(argv)
    extra = list(args.args)
    if args.random_images:
        extra = random_image_folder(args.random_images) + extra
    rows = []
    for config in args.configs:
        rows.append(benchmark(config, args.chunks, args.chunk, args.warmup, args.accelerator, extra, args.eval_every, args.precision))
        r = rows[-1]
        print(f"{config}: Lightning {r['lightning_ms_batch']:.2f} ms/batch, plain {r['plain_ms_batch']:.2f}, "
              f"ratio {r['ratio']:.3f}", flush=True)
    table = render(rows, baseline="GAN", matmul=matmul_gflops(torch.device("cuda" if args.accelerator == "gpu" else "cpu")))
    print(table)
    if args.out:
        args.out.write_text(f"Command: `{' '.join(['python', 'experiments/benchmark.py', *(argv or sys.argv[1:])])}`\n\n"
                            + table)
    return rows


if __name__ == "__main__":
    main()
