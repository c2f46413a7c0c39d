"""`CollapseMonitor`: watch a diversity signal and the training curves, say when collapse is coming, and act.

The loop the codebase exists to support: evaluate the diversity of the samples periodically (any validation
metric: `callbacks.DiversityMetrics`' label-free ones on any data, or modes / KL where the modes are known); when
it crosses a threshold for `patience` evaluations in a row, or the training curves show a warning sign, log an
event and apply a preventive action. The threshold is a level of the signal (`rule="level"`), or, where no healthy
level is known (a user's own data), a factor: the signal detects when it is that many times worse than its best
value at the run's earlier judged evaluations (`rule="worsening"`; e.g. JSD twice its lowest so far).

Warning signs in the curves (Arjovsky & Bottou 2017 and common practice; `loss_warning`), judged at each
validation over the generator steps since the previous one:
- the discriminator's loss near zero (below `d_loss_floor`) while the generator's rises: D wins outright and G's
  gradients carry little information;
- a sudden drop of the generator's loss (by more than `g_drop` of its previous level): G found one output that
  fools D, the classic prelude to collapsing onto it;
- the generator's gradients exploding or vanishing (with `grad_jump` set): the median norm of its gradient over
  the window moved by more than a factor `grad_jump` from the previous window's (`gradient_warning`).

Actions (`action`): "none" (report only), "stop" (end training; keep the best weights by the monitored signal with
a ModelCheckpoint(monitor=<signal>) beside it), "entropy" / "mode_seeking" (switch on that generator regulariser
at weight `action_value`; see `models.regularizers`), "lr" (multiply both learning rates by `action_value`),
"d_lr" / "g_lr" (multiply the discriminator's, or the generator's, learning rate by `action_value`: rebalance the
players), "n_critic" (set the discriminator steps per generator step to `action_value`); with `restore`, the weights and
optimiser states first go back to the last evaluation without a detection. Under DDP every rank acts when any
rank detects (the loss curves are each rank's own). Each detection is logged as
`collapse/detected/<signal>` (e.g. collapse/detected/recall: 1 at the evaluation that fires; one key per signal,
so monitors of different signals can watch one run), printed in one line, raised as a W&B alert where W&B logs
online, kept in `events` (saved in checkpoints, so a resumed run re-applies its actions) and written to
`<run folder>/collapse_events.json`. List it after the callbacks that log its signal: it reads the signal at the
end of each validation epoch, when those have logged it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

ACTIONS = ("none", "stop", "entropy", "mode_seeking", "lr", "d_lr", "g_lr", "n_critic")
RULES = ("level", "worsening")


def worsening(value: float, best: Optional[float], mode: str) -> Optional[float]:
    """How many times worse `value` is than `best` (None without a best): for an "above" signal (lower is
    healthier) value / best, for a "below" one best / value; a best of 0 (above) or a value of 0 (below) makes any
    worsening infinite, no change 1."""
    if best is None:
        return None
    worse, better = (value, best) if mode == "above" else (best, value)
    if better > 0:
        return worse / better
    return math.inf if worse > better else 1.0


def loss_warning(d_losses: Sequence[float], g_losses: Sequence[float], d_loss_floor: Optional[float] = 0.05,
                 g_drop: float = 0.5) -> Optional[str]:
    """The warning sign the loss curves of one evaluation window show (None when there is none): D's mean loss
    below `d_loss_floor` while G's loss ends higher than it started (not checked with d_loss_floor None), or G's
    mean loss over the second half of the window below (1 - g_drop) x its mean over the first half (a positive
    G loss only). Needs at least 4 values of each."""
    if len(d_losses) < 4 or len(g_losses) < 4:
        return None
    d_mean = sum(d_losses) / len(d_losses)
    half = len(g_losses) // 2
    first, second = sum(g_losses[:half]) / half, sum(g_losses[half:]) / (len(g_losses) - half)
    if d_loss_floor is not None and d_mean < d_loss_floor and second > first:
        return f"the discriminator's loss is {d_mean:.3g} (below {d_loss_floor}) while the generator's rises"
    if first > 0 and second < (1 - g_drop) * first:
        return f"the generator's loss dropped from {first:.3g} to {second:.3g} (by more than {g_drop:.0%})"
    return None


def gradient_warning(previous: Optional[float], current: Optional[float], grad_jump: float = 10.0) -> Optional[str]:
    """The warning when the median gradient norm of this window is over `grad_jump` times, or under 1/`grad_jump`
    of, the previous window's (None without both)."""
    if previous is None or current is None or previous <= 0:
        return None
    if current > grad_jump * previous:
        return f"the generator's gradient norm exploded from {previous:.3g} to {current:.3g}"
    if current < previous / grad_jump:
        return f"the generator's gradient norm vanished from {previous:.3g} to {current:.3g}"
    return None


class CollapseMonitor(L.Callback):
    """See the module docstring.

    Args:
        signal: the logged validation metric to watch (e.g. "val/recall", "val/coverage", "val/jsd",
            "val/ndb_fraction", "val/duplicate_rate", "val/modes"). The default, recall below 0.3, saw collapse best
            on grid25_veegan (results/grid25_veegan/grid25_veegan_collapse_detection.md).
        threshold: the value past which the signal says "collapsing" (rule "level"), or the factor (above 1) by
            which it must be worse than its best so far (rule "worsening").
        mode: "above" (collapse when signal > threshold: duplicate rate, NDB, JSD) or "below" (coverage, modes).
        rule: "level" (the threshold is a value of the signal) or "worsening" (the signal against its best value at
            the earlier evaluations judged, from start_step on: above-signals value / lowest, below-signals
            highest / value; the first judged evaluation has no best and is not past). No level to calibrate on
            data with known modes; it sees a collapse that happens during training, not one present from the first
            evaluation (experiments/collapse_detection.py measures both rules).
        patience: evaluations in a row past the threshold before a detection.
        watch_losses: also detect the loss-curve warning signs (`loss_warning`).
        grad_jump: also watch the generator's gradient norm (taken every log_every_n_steps generator steps): a
            window median over grad_jump times, or under 1/grad_jump of, the previous window's is a warning sign
            (`gradient_warning`; e.g. 10). None (default) does not watch it.
        action, action_value: what to do on a detection (see ACTIONS).
        once: act on the first detection only (later ones are still logged). A detection of the signal uses up
            its streak: with patience p, the next one needs p more evaluations past the threshold in a row.
        restore: before acting, roll the weights, buffers and optimiser states back to the last evaluation inside
            the threshold without a warning sign, on every rank (a copy kept in memory at each such evaluation, not
            in checkpoints: a resumed run takes it again at its next healthy evaluation; the step counters go on).
            For actions other than "none" and "stop".
        start_step: the first generator step whose evaluation is judged (0: every one). Early in training every
            diversity signal is low whether or not the generator collapses (on grid25_veegan recall is 0.08 at
            step 1,000 in every run), so a monitor that acts may wait until the samples have had time to form.
    """

    def __init__(self, signal: str = "val/recall", threshold: float = 0.3, mode: str = "below",
                 patience: int = 1, watch_losses: bool = True, d_loss_floor: float = 0.05, g_drop: float = 0.5,
                 grad_jump: Optional[float] = None,
                 action: str = "none", action_value: Optional[float] = None, once: bool = True,
                 restore: bool = False, start_step: int = 0, rule: str = "level"):
        if mode not in ("above", "below"):
            raise ValueError(f"mode must be 'above' or 'below'; got {mode!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {list(RULES)}; got {rule!r}")
        if rule == "worsening" and not (math.isfinite(threshold) and threshold > 1):
            raise ValueError(f"rule 'worsening' takes the threshold as a factor above 1 (e.g. 2: twice as bad as "
                             f"the best so far); got threshold {threshold!r}")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {list(ACTIONS)}; got {action!r}")
        needs_value = {"entropy": "the regulariser's weight", "mode_seeking": "the regulariser's weight",
                       "lr": "the learning-rate factor", "d_lr": "the discriminator's learning-rate factor",
                       "g_lr": "the generator's learning-rate factor",
                       "n_critic": "the new discriminator steps per generator step"}
        if action in needs_value and (action_value is None or not math.isfinite(action_value) or action_value <= 0):
            raise ValueError(f"action {action!r} needs action_value > 0 ({needs_value[action]}); got {action_value!r}")
        if action == "n_critic" and not float(action_value).is_integer():
            raise ValueError(f"action 'n_critic' needs an integer action_value; got {action_value!r}")
        if not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f"patience must be an integer >= 1; got {patience!r}")
        if restore and action in ("none", "stop"):
            raise ValueError(f"restore rolls back before an action that changes training; with action {action!r} "
                             f"there is none: choose entropy, mode_seeking, lr or n_critic, or restore: false")
        if not (isinstance(start_step, int) and start_step >= 0):
            raise ValueError(f"start_step must be an integer >= 0 (the first generator step judged); got {start_step!r}")
        self.restore, self.start_step = restore, start_step
        self._healthy: Optional[dict[str, Any]] = None
        self.signal, self.threshold, self.mode, self.patience = signal, float(threshold), mode, patience
        self.rule, self._best = rule, None
        self.watch_losses, self.d_loss_floor, self.g_drop = watch_losses, d_loss_floor, g_drop
        self.action, self.action_value, self.once = action, action_value, once
        self.events: list[dict[str, Any]] = []
        self._streak = 0
        self._d_losses: list[float] = []
        self._g_losses: list[float] = []
        self.grad_jump = grad_jump
        self._grad_norms: list[float] = []
        self._previous_grad_norm: Optional[float] = None
        self._warned_missing = False

    @property
    def log_key(self) -> str:
        """The key this monitor logs its detections under: collapse/detected/<signal without val/>."""
        return f"collapse/detected/{self.signal.removeprefix('val/')}"

    # ------------------------------------------------------------------ state (checkpoints)
    @property
    def state_key(self) -> str:  # several monitors (other signals or actions) can watch one run
        keys = dict(signal=self.signal, threshold=self.threshold, mode=self.mode, patience=self.patience,
                    action=self.action, action_value=self.action_value)
        if self.rule != "level":  # the key of the monitors saved before rules existed stays as it was
            keys["rule"] = self.rule
        return self._generate_state_key(**keys)

    def state_dict(self) -> dict[str, Any]:
        # `restore`'s in-memory copy is not saved: after a resume it is taken again at the next healthy evaluation
        return {"events": self.events, "streak": self._streak, "previous_grad_norm": self._previous_grad_norm,
                "best": self._best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events, self._streak = list(state_dict.get("events", [])), int(state_dict.get("streak", 0))
        self._previous_grad_norm = state_dict.get("previous_grad_norm")
        self._best = state_dict.get("best")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for event in self.events:  # a resumed run: the actions its checkpoint had taken hold again
            if event.get("action_applied"):
                self._apply(trainer, pl_module, event["action_applied"], event.get("action_value"), replay=True)

    # ------------------------------------------------------------------ watching
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        # the base logs the losses every log_every_n_steps batches (the G loss on batches with a G step)
        d_steps = getattr(pl_module, "d_steps", None)
        if not self.watch_losses or d_steps is None or d_steps % trainer.log_every_n_steps:
            return
        metrics = trainer.callback_metrics
        if "train/d_loss" in metrics:
            self._d_losses.append(float(metrics["train/d_loss"]))
        if "train/g_loss" in metrics and d_steps % getattr(pl_module, "n_critic", 1) == 0:
            self._g_losses.append(float(metrics["train/g_loss"]))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        generator_optimizer = getattr(pl_module, "generator_optimizer", None)
        if self.grad_jump is None or generator_optimizer is None or pl_module.g_steps % trainer.log_every_n_steps:
            return
        if optimizer is not generator_optimizer() and getattr(optimizer, "optimizer", None) is not generator_optimizer():
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            self._grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the metric callbacks listed before this one have logged their figures
        if trainer.sanity_checking:
            return
        if getattr(pl_module, "g_steps", 0) < self.start_step:  # too early to judge: every signal is low at first
            self._d_losses, self._g_losses, self._grad_norms = [], [], []
            pl_module.log(self.log_key, 0.0, sync_dist=False)
            return
        reasons, past = [], False
        value = trainer.callback_metrics.get(self.signal)
        if value is None:
            if not self._warned_missing:
                self._warned_missing = True
                rank_zero_info(f"CollapseMonitor: no {self.signal!r} was logged at this validation; add the callback "
                               f"that logs it (e.g. callbacks.DiversityMetrics) or choose another signal")
        else:
            value = float(value)
            ratio = None
            if self.rule == "worsening":
                ratio = worsening(value, self._best, self.mode) if math.isfinite(value) else None
                past = not math.isfinite(value) or (ratio is not None and ratio > self.threshold)
                if math.isfinite(value):  # the best so far includes this evaluation from the next one on
                    self._best = value if self._best is None else (min(self._best, value) if self.mode == "above"
                                                                   else max(self._best, value))
            else:
                # not finite counts as past: val/kl is NaN exactly when no sample is of high quality
                past = not math.isfinite(value) or (value > self.threshold if self.mode == "above"
                                                    else value < self.threshold)
            self._streak = self._streak + 1 if past else 0
            if self._streak >= self.patience:
                where = ("not finite" if not math.isfinite(value) else f"{self.mode} {self.threshold:g}"
                         if ratio is None else f"{ratio:.3g} times worse than its best so far, past {self.threshold:g}")
                reasons.append(f"{self.signal} = {value:.4g} {where} for {self._streak} "
                               f"evaluation{'s' if self._streak > 1 else ''}")
                self._streak = 0  # a detection uses up its streak: the next needs `patience` more in a row
        # D's loss near zero means "D wins" only for losses >= 0 (not a Wasserstein critic's)
        floor = self.d_loss_floor if getattr(pl_module, "discriminator_loss_nonnegative", lambda: True)() else None
        warning = loss_warning(self._d_losses, self._g_losses, floor, self.g_drop) if self.watch_losses else None
        self._d_losses, self._g_losses = [], []
        if warning:
            reasons.append(warning)
        if self.grad_jump is not None and self._grad_norms:
            current = statistics.median(self._grad_norms)
            warning = gradient_warning(self._previous_grad_norm, current, self.grad_jump)
            self._previous_grad_norm, self._grad_norms = current, []
            if warning:
                reasons.append(warning)
        # the losses and gradients are each rank's own: all ranks act when any rank detects, so they stay in step
        detected = trainer.strategy.reduce_boolean_decision(bool(reasons), all=False)
        if detected and not reasons:
            reasons.append("another rank's training curves")
        pl_module.log(self.log_key, float(detected), sync_dist=False)
        if detected:
            self._detected(trainer, pl_module, "; ".join(reasons), value)
        elif self.restore:
            # only a state inside the threshold on every rank is one to go back to (with patience > 1 the
            # evaluations that begin a streak are past it without a detection yet)
            if not trainer.strategy.reduce_boolean_decision(past or bool(reasons), all=False):
                self._healthy = self._snapshot(trainer, pl_module)

    # ------------------------------------------------------------------ acting
    def _detected(self, trainer: L.Trainer, pl_module: L.LightningModule, reason: str, value: Optional[float]) -> None:
        act = self.action != "none" and not (self.once and any(e.get("action_applied") for e in self.events))
        step = int(getattr(pl_module, "g_steps", trainer.global_step))
        event = {"g_step": step, "global_step": trainer.global_step, "reason": reason, "signal": self.signal,
                 "value": value, "action_applied": self.action if act else None,
                 "action_value": self.action_value if act else None}
        self.events.append(event)
        restored = ""
        if act and self.restore and self._healthy is not None:  # first, so the action applies to what is restored
            self._restore(trainer, pl_module, self._healthy)
            restored = f"; weights and optimiser states restored to generator step {self._healthy['g_step']}"
            event["restored_to_g_step"] = self._healthy["g_step"]
        taken = (self._apply(trainer, pl_module, self.action, self.action_value) if act else "no action") + restored
        line = f"CollapseMonitor at generator step {step}: {reason}; {taken}"
        rank_zero_info(line)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and getattr(logger, "mode", "online") == "online" and trainer.is_global_zero:
                try:
                    logger.experiment.alert(title="Mode collapse warning", text=line)
                except Exception as err:  # noqa: BLE001 - an alert that cannot be sent must not stop training
                    rank_zero_info(f"CollapseMonitor: the W&B alert was not sent ({err})")
        self._write_events(trainer)

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule, action: str, value: Optional[float],
               replay: bool = False) -> str:
        if action == "stop":
            if not replay:
                trainer.should_stop = True
            return "stopping training"
        if action in ("entropy", "mode_seeking"):
            setattr(pl_module, f"{action}_weight", float(value))
            return f"{action} regulariser on at weight {value:g}"
        if action in ("lr", "d_lr", "g_lr"):
            player = {"d_lr": "discriminator", "g_lr": "generator"}.get(action)
            if not replay:  # a checkpoint keeps the optimisers' learning rates and the schedulers' base rates
                optimizers = trainer.optimizers if player is None else [getattr(pl_module, f"{player}_optimizer")()]
                self._scale_learning_rates(trainer, optimizers, float(value))
            return f"learning rates x {value:g}" if player is None else f"the {player}'s learning rate x {value:g}"
        if action == "n_critic":
            pl_module.n_critic = int(value)
            return f"n_critic set to {int(value)}"
        return "no action"

    @staticmethod
    def _scale_learning_rates(trainer: L.Trainer, optimizers: list, factor: float) -> None:
        """Multiplies the learning rate of every parameter group of `optimizers` by `factor`, and the base rates of
        the schedulers that drive them (else a LambdaLR-like schedule would undo it at its next step)."""
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= factor
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if any(getattr(scheduler, "optimizer", None) is optimizer for optimizer in optimizers) \
                    and hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]

    @staticmethod
    def _snapshot(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The model's weights and buffers and the optimisers' states, copied (kept in memory)."""
        return {"g_step": int(getattr(pl_module, "g_steps", trainer.global_step)),
                "model": copy.deepcopy(pl_module.state_dict()),
                "optimizers": [copy.deepcopy(optimizer.state_dict()) for optimizer in trainer.optimizers]}

    @staticmethod
    def _restore(trainer: L.Trainer, pl_module: L.LightningModule, snapshot: dict[str, Any]) -> None:
        pl_module.load_state_dict(snapshot["model"])
        for optimizer, state in zip(trainer.optimizers, snapshot["optimizers"]):
            optimizer.load_state_dict(state)

    def _write_events(self, trainer: L.Trainer) -> None:
        folder = trainer.log_dir or trainer.default_root_dir
        if folder and trainer.is_global_zero and os.path.realpath(folder) != os.path.realpath(os.getcwd()):
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "collapse_events.json"), "w") as f:
                json.dump(self.events, f, indent=1)
