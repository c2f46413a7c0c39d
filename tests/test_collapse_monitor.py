"""CollapseMonitor: the loss-curve warning signs on hand-made curves, detection after `patience` evaluations past
the threshold, each action applied and logged, events kept through a resume, and bad arguments."""

from __future__ import annotations

import json
import math
import statistics
from functools import partial

import lightning as L
import pytest
import torch

from callbacks import CollapseMonitor
from callbacks.collapse_monitor import gradient_warning, loss_warning
from tests.factories import quiet_trainer, tiny_model, tiny_ring


class Scale(torch.nn.Module):
    """A discriminator stand-in: the logit `factor` x the first coordinate."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x[:, 0]


class ScriptedSignal(L.Callback):
    """Logs val/signal from a list, one value per validation (a stand-in for a diversity metric)."""

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            pl_module.log("val/signal", float(self.values[min(self.calls, len(self.values) - 1)]))
            self.calls += 1


def test_loss_warning_signs_on_hand_made_curves():
    assert loss_warning([0.01] * 6, [1.0, 1.1, 1.2, 1.5, 1.8, 2.0]) is not None  # D wins, G's loss climbs
    assert "below 0.05" in loss_warning([0.01] * 6, [1.0, 1.1, 1.2, 1.5, 1.8, 2.0])
    assert loss_warning([0.01] * 6, [2.0, 1.9, 1.8, 1.7, 1.6, 1.5]) is None  # D low but G improving
    assert "dropped from 2 to 0.5" in loss_warning([0.7] * 4, [2.0, 2.0, 0.5, 0.5])  # a sudden drop of G's loss
    assert loss_warning([0.7] * 4, [2.0, 2.0, 1.5, 1.5]) is None  # a 25 % drop: not sudden at g_drop 0.5
    assert loss_warning([0.01] * 3, [1.0, 2.0, 3.0]) is None  # too few values to judge


def test_gradient_warning_by_hand():
    assert "exploded from 1 to 20" in gradient_warning(1.0, 20.0)
    assert "vanished from 1 to 0.05" in gradient_warning(1.0, 0.05)
    assert gradient_warning(1.0, 5.0) is None and gradient_warning(None, 5.0) is None


def test_the_generators_gradient_norm_is_watched_and_a_jump_reported(tmp_path):
    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=10.0, watch_losses=False, grad_jump=1.0001)
    _fit(tmp_path, monitor, [0.0], max_steps=40, log_every_n_steps=1)
    # any change of the median norm beyond 0.01 % between windows is a "jump" at this setting: each window after the
    # first reports one, and nothing else fires (the signal never passes 10)
    assert len(monitor.events) == 3 and all("gradient norm" in e["reason"] for e in monitor.events)


def test_the_gradient_watched_is_the_generators_at_its_steps(tmp_path):
    """The window median the monitor keeps equals the median of G's total gradient norm taken here from G's own
    parameters at each G step (not D's, whose norm differs), over the last window (the generator steps 21-40)."""
    class Record(L.Callback):
        def __init__(self):
            self.windows, self.current = [], []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            params = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if params == {id(p) for p in pl_module.generator.parameters()}:
                norms = [p.grad.detach().norm() for p in pl_module.generator.parameters() if p.grad is not None]
                self.current.append(math.sqrt(sum(float(n) ** 2 for n in norms)))

        def on_validation_epoch_end(self, trainer, pl_module):
            self.windows.append(self.current)
            self.current = []

    record = Record()
    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=10.0, watch_losses=False, grad_jump=100.0)
    torch.manual_seed(0)
    trainer = quiet_trainer(max_steps=80, callbacks=[ScriptedSignal([0.0]), record, monitor], default_root_dir=tmp_path,
                            log_every_n_steps=1, val_check_interval=None, check_val_every_n_epoch=4)
    trainer.fit(tiny_model("GAN"), tiny_ring())  # validations every 4 epochs of 5 batches: at G steps 20 and 40
    assert [len(w) for w in record.windows] == [20, 20]
    assert monitor._previous_grad_norm == pytest.approx(statistics.median(record.windows[-1]), rel=1e-5)


def _fit(tmp_path, monitor, values, max_steps=40, **trainer_kwargs):
    torch.manual_seed(0)
    model = tiny_model("GAN")
    trainer = quiet_trainer(max_steps=max_steps, callbacks=[ScriptedSignal(values), monitor], default_root_dir=tmp_path,
                            **trainer_kwargs)
    trainer.fit(model, tiny_ring())  # 5 batches an epoch: a validation every 5 generator steps (10 global steps)
    return model, trainer


def test_detection_after_patience_switches_the_regulariser_on_once_and_writes_the_events(tmp_path):
    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=0.5, patience=2, watch_losses=False,
                              action="entropy", action_value=0.3)
    model, trainer = _fit(tmp_path, monitor, [0.1, 0.9, 0.2, 0.8, 0.9, 0.95, 0.99], max_steps=70)
    # evaluations at generator steps 5, 10, ..., 35: 0.1, 0.9 (streak 1), 0.2 (reset), 0.8 (1), 0.9 (2: detected,
    # acts; the streak starts again), 0.95 (1), 0.99 (2: detected, logged only)
    assert [e["g_step"] for e in monitor.events] == [25, 35]
    assert model.entropy_weight == 0.3
    assert [e["action_applied"] for e in monitor.events] == ["entropy", None]
    assert "val/signal = 0.9 above 0.5 for 2 evaluations" in monitor.events[0]["reason"]
    assert json.loads((tmp_path / "collapse_events.json").read_text()) == monitor.events
    assert float(trainer.callback_metrics["collapse/detected/signal"]) == 1.0


@pytest.mark.parametrize("action, value", [("stop", None), ("lr", 0.5), ("n_critic", 3), ("mode_seeking", 1.0),
                                           ("d_lr", 0.25), ("g_lr", 0.5)])
def test_each_action_is_applied(tmp_path, action, value):
    monitor = CollapseMonitor(signal="val/signal", threshold=0.5, mode="below", watch_losses=False, action=action,
                              action_value=value)
    model, trainer = _fit(tmp_path, monitor, [0.9, 0.1])  # detected at the second evaluation, generator step 10
    assert monitor.events[0]["g_step"] == 10 and monitor.events[0]["action_applied"] == action
    if action == "stop":
        assert model.g_steps == 10  # stopped there instead of running on to generator step 20
    elif action == "lr":
        assert [g["lr"] for opt in trainer.optimizers for g in opt.param_groups] == pytest.approx(
            [0.5 * model.hparams.g_lr, 0.5 * model.hparams.d_lr])
    elif action in ("d_lr", "g_lr"):  # one player's rate only: the generator's optimiser is the first
        factors = [1.0, value] if action == "d_lr" else [value, 1.0]
        assert [g["lr"] for opt in trainer.optimizers for g in opt.param_groups] == pytest.approx(
            [factors[0] * model.hparams.g_lr, factors[1] * model.hparams.d_lr])
    elif action == "n_critic":
        assert model.n_critic == 3 and model.g_steps < model.d_steps  # one G step per 3 D steps after it
    else:
        assert model.mode_seeking_weight == 1.0


def test_restore_rolls_the_weights_back_to_the_last_healthy_evaluation(tmp_path):
    class Record(L.Callback):  # the generator's weights at each evaluation, before the monitor acts
        def __init__(self):
            self.weights = []

        def on_validation_epoch_end(self, trainer, pl_module):
            self.weights.append(pl_module.generator.net[0].weight.detach().clone())

    record = Record()
    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=0.5, watch_losses=False, action="entropy",
                              action_value=0.1, restore=True)
    torch.manual_seed(0)
    model = tiny_model("GAN")
    trainer = quiet_trainer(max_steps=30, callbacks=[ScriptedSignal([0.1, 0.2, 0.9]), record, monitor],
                            default_root_dir=tmp_path)
    # stop right after the detection (generator step 15) to look at the weights it left
    trainer.fit(model, tiny_ring())
    assert monitor.events[0]["g_step"] == 15 and monitor.events[0]["restored_to_g_step"] == 10
    assert torch.equal(model.generator.net[0].weight, record.weights[1])  # back at step 10's weights
    assert not torch.equal(record.weights[1], record.weights[2])
    with pytest.raises(ValueError, match="restore rolls back before an action"):
        CollapseMonitor(action="stop", restore=True)


def test_restore_with_patience_goes_back_to_the_last_evaluation_inside_the_threshold(tmp_path):
    """With patience 2 the evaluation that starts the streak is already past the threshold, though nothing is
    detected there: restore must skip it and go back to the one before."""
    record = []

    class Record(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            record.append(pl_module.generator.net[0].weight.detach().clone())

    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=0.5, patience=2, watch_losses=False,
                              action="entropy", action_value=0.1, restore=True)
    torch.manual_seed(0)
    model = tiny_model("GAN")
    trainer = quiet_trainer(max_steps=30, callbacks=[ScriptedSignal([0.1, 0.9, 0.9]), Record(), monitor],
                            default_root_dir=tmp_path)
    trainer.fit(model, tiny_ring())  # evaluations at generator steps 5 (inside), 10 (past), 15 (past: detected)
    assert monitor.events[0]["g_step"] == 15 and monitor.events[0]["restored_to_g_step"] == 5
    assert torch.equal(model.generator.net[0].weight, record[0]) and not torch.equal(record[0], record[1])


def test_acting_on_every_detection_needs_a_new_streak_each_time(tmp_path):
    """once=False, patience 2, the signal past the threshold at all 6 evaluations: detections at the 2nd, 4th and
    6th, so the learning rates are halved 3 times (not 5, one per evaluation from the 2nd on)."""
    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=0.5, patience=2, watch_losses=False,
                              action="lr", action_value=0.5, once=False)
    model, trainer = _fit(tmp_path, monitor, [0.9], max_steps=60)
    assert [e["g_step"] for e in monitor.events] == [10, 20, 30]
    assert [g["lr"] for opt in trainer.optimizers for g in opt.param_groups] == pytest.approx(
        [0.125 * model.hparams.g_lr, 0.125 * model.hparams.d_lr])


def test_a_signal_that_is_not_finite_counts_as_past_the_threshold(tmp_path):
    # val/kl is NaN when no generated sample is of high quality: the worst collapse, not "no information"
    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=0.5, watch_losses=False)
    _fit(tmp_path, monitor, [0.1, float("nan"), 0.1], max_steps=30)
    assert [e["g_step"] for e in monitor.events] == [10]
    assert "val/signal = nan not finite" in monitor.events[0]["reason"]


def test_the_lr_action_holds_under_a_schedule_that_recomputes_from_base_rates(tmp_path):
    """LambdaLR sets lr = base_lr x f(step) at every step: scaling the optimisers' rates alone would be undone
    at the next scheduler step. Halved at the 2nd of 4 evaluations; the schedule's factor is 1 throughout."""
    monitor = CollapseMonitor(signal="val/signal", threshold=0.5, mode="below", watch_losses=False, action="lr",
                              action_value=0.5)
    torch.manual_seed(0)
    model = tiny_model("GAN", lr_scheduler=partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda epoch: 1.0))
    trainer = quiet_trainer(max_steps=40, callbacks=[ScriptedSignal([0.9, 0.1, 0.9]), monitor],
                            default_root_dir=tmp_path)
    trainer.fit(model, tiny_ring())
    assert [e["g_step"] for e in monitor.events] == [10]
    assert [g["lr"] for opt in trainer.optimizers for g in opt.param_groups] == pytest.approx(
        [0.5 * model.hparams.g_lr, 0.5 * model.hparams.d_lr])


def test_one_players_lr_action_holds_under_a_schedule_and_leaves_the_other_player(tmp_path):
    """d_lr / g_lr under LambdaLR: the named player's rate and its scheduler's base rate are scaled, so the next
    scheduler steps keep it; the other player's rate and base rate stay as they were."""
    for action in ("d_lr", "g_lr"):
        monitor = CollapseMonitor(signal="val/signal", threshold=0.5, mode="below", watch_losses=False, action=action,
                                  action_value=0.25)
        torch.manual_seed(0)
        model = tiny_model("GAN", lr_scheduler=partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda epoch: 1.0))
        trainer = quiet_trainer(max_steps=40, callbacks=[ScriptedSignal([0.9, 0.1, 0.9]), monitor],
                                default_root_dir=tmp_path / action)
        trainer.fit(model, tiny_ring())
        assert [e["g_step"] for e in monitor.events] == [10]
        expected = {name: model.hparams[name] * (0.25 if name == action else 1.0) for name in ("g_lr", "d_lr")}
        g_opt, d_opt = model.generator_optimizer(), model.discriminator_optimizer()
        assert [g["lr"] for g in g_opt.param_groups] == pytest.approx([expected["g_lr"]])
        assert [g["lr"] for g in d_opt.param_groups] == pytest.approx([expected["d_lr"]])
        bases = {id(c.scheduler.optimizer): c.scheduler.base_lrs for c in trainer.lr_scheduler_configs}
        assert bases[id(g_opt)] == pytest.approx([expected["g_lr"]])
        assert bases[id(d_opt)] == pytest.approx([expected["d_lr"]])


def test_restore_then_scale_the_learning_rates(tmp_path):
    """restore puts the optimisers' saved states back, learning rates included, so the lr action comes after it."""
    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=0.5, watch_losses=False, action="lr",
                              action_value=0.5, restore=True)
    model, trainer = _fit(tmp_path, monitor, [0.1, 0.9], max_steps=20)
    assert monitor.events[0]["restored_to_g_step"] == 5
    assert [g["lr"] for opt in trainer.optimizers for g in opt.param_groups] == pytest.approx(
        [0.5 * model.hparams.g_lr, 0.5 * model.hparams.d_lr])


def test_two_monitors_of_one_signal_restore_then_set_both_players_rates(tmp_path):
    """grid25's gan_ttur_rebalance: two monitors of one signal fire at the same evaluation, in list order; the first
    restores the healthy states (the learning rates they held included) and scales D's rate, the second G's, so
    the pair ends at D 4e-4 x 0.25 = 1e-4 and G 1e-4 x 10 = 1e-3 whatever the rates were when it fired; the weights
    are the healthy evaluation's; a resume from a later checkpoint keeps that pair and both monitors' events."""
    class Record(L.Callback):  # the generator's weights at each evaluation, before the monitors act
        def __init__(self):
            self.weights = []

        def on_validation_epoch_end(self, trainer, pl_module):
            self.weights.append(pl_module.generator.net[0].weight.detach().clone())

    def monitors():
        common = dict(mode="above", signal="val/signal", threshold=2.0, rule="worsening", watch_losses=False)
        return [CollapseMonitor(action="d_lr", action_value=0.25, restore=True, **common),
                CollapseMonitor(action="g_lr", action_value=10.0, **common)]

    record, (first, second) = Record(), monitors()
    torch.manual_seed(0)
    model = tiny_model("GAN", g_lr=1e-4, d_lr=4e-4)
    trainer = quiet_trainer(max_steps=30, callbacks=[ScriptedSignal([0.02, 0.01, 0.05]), record, first, second],
                            default_root_dir=tmp_path)
    trainer.fit(model, tiny_ring())  # evaluations at generator steps 5, 10, 15: 0.05 is 5x the best 0.01 at 15
    assert [e["g_step"] for e in first.events] == [e["g_step"] for e in second.events] == [15]
    assert first.events[0]["restored_to_g_step"] == 10 and "restored_to_g_step" not in second.events[0]
    assert torch.equal(model.generator.net[0].weight, record.weights[1])  # step 10's weights
    generator, discriminator = model.generator_optimizer(), model.discriminator_optimizer()
    assert [g["lr"] for g in generator.param_groups] == pytest.approx([1e-3])
    assert [g["lr"] for g in discriminator.param_groups] == pytest.approx([1e-4])
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    fresh = monitors()
    torch.manual_seed(1)
    resumed = tiny_model("GAN", g_lr=1e-4, d_lr=4e-4)
    later = quiet_trainer(max_steps=40, callbacks=[ScriptedSignal([0.01]), *fresh], default_root_dir=tmp_path)
    later.fit(resumed, tiny_ring(), ckpt_path=tmp_path / "after.ckpt")
    assert fresh[0].events == first.events and fresh[1].events == second.events  # no new detection at 0.01
    assert [g["lr"] for g in resumed.generator_optimizer().param_groups] == pytest.approx([1e-3])
    assert [g["lr"] for g in resumed.discriminator_optimizer().param_groups] == pytest.approx([1e-4])


def test_no_floor_warning_for_a_wasserstein_critic():
    assert loss_warning([-3.0] * 6, [1.0, 1.1, 1.2, 1.5, 1.8, 2.0], d_loss_floor=None) is None
    assert not tiny_model("WGANGP").discriminator_loss_nonnegative()
    assert not tiny_model("GAN", loss="wasserstein").discriminator_loss_nonnegative()
    assert tiny_model("GAN", loss="hinge").discriminator_loss_nonnegative()
    # D2GAN's loss, -log D1(x) + D1(G) + D2(x) - log D2(G) with softplus outputs, is below 0 when D wins: logits
    # a1(x) = 5, a1(G) = -5, a2(x) = -5, a2(G) = 5 give 2 (softplus(-5) - log softplus(5)) = -3.208, so 0 is no floor
    model = tiny_model("D2GAN")
    model.discriminator, model.discriminator2 = Scale(5.0), Scale(-5.0)
    loss, _ = model.discriminator_loss(torch.ones(4, 2), -torch.ones(4, 2), None)
    softplus = math.log1p(math.exp(-5.0))
    assert loss.item() == pytest.approx(2 * (softplus - math.log(5.0 + softplus)), rel=1e-5) and loss.item() < 0
    assert not model.discriminator_loss_nonnegative()


def test_a_resumed_run_keeps_the_events_and_reapplies_the_action(tmp_path):
    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=0.5, watch_losses=False, action="entropy",
                              action_value=0.2)
    model, trainer = _fit(tmp_path, monitor, [0.9], max_steps=20)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    torch.manual_seed(0)
    fresh_model = tiny_model("GAN")
    fresh = CollapseMonitor(mode="above", signal="val/signal", threshold=0.5, watch_losses=False, action="entropy",
                            action_value=0.2)
    quiet_trainer(max_steps=30, callbacks=[ScriptedSignal([0.1]), fresh], default_root_dir=tmp_path).fit(
        fresh_model, tiny_ring(), ckpt_path=tmp_path / "mid.ckpt")
    assert len(monitor.events) == 2 and fresh.events == monitor.events and fresh_model.entropy_weight == 0.2


def test_a_collapsed_generator_is_caught_by_the_duplicate_rate_and_stopped(tmp_path):
    """End to end with a real signal: DiversityMetrics' duplicate rate on a generator that ignores z."""
    from callbacks import DiversityMetrics

    torch.manual_seed(0)
    model = tiny_model("GAN", g_lr=1e-12)  # G stays where it is put: collapsed on one point
    with torch.no_grad():
        model.generator.net[-1].weight.zero_()
    monitor = CollapseMonitor(mode="above", signal="val/duplicate_rate", threshold=0.5, watch_losses=False,
                              action="stop")
    trainer = quiet_trainer(max_steps=40, default_root_dir=tmp_path,
                            callbacks=[DiversityMetrics(num_bins=8, num_samples=256), monitor])
    trainer.fit(model, tiny_ring(val_size=256))
    assert model.g_steps == 5 and monitor.events[0]["value"] == 1.0 and monitor.events[0]["action_applied"] == "stop"


def test_a_missing_signal_is_said_once_and_nothing_is_detected(tmp_path):
    monitor = CollapseMonitor(mode="above", signal="val/not_logged", watch_losses=False, action="stop")
    model, _ = _fit(tmp_path, monitor, [0.0], max_steps=20)
    assert monitor.events == [] and model.g_steps == 10


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "higher"}, "mode must be 'above' or 'below'"),
    ({"action": "restart"}, "action must be one of"),
    ({"action": "entropy"}, "action 'entropy' needs action_value > 0"),
    ({"action": "n_critic", "action_value": 2.5}, "needs an integer action_value"),
    ({"patience": 0}, "patience must be an integer >= 1"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CollapseMonitor(**kwargs)


def test_evaluations_before_start_step_are_not_judged(tmp_path):
    # the signal is past the threshold at every evaluation (generator steps 5, 10, ..., 40); from step 20 on it counts
    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=0.5, watch_losses=False, start_step=20,
                              action="entropy", action_value=0.2)
    model, trainer = _fit(tmp_path, monitor, [0.9] * 8, max_steps=80)
    assert [e["g_step"] for e in monitor.events] == [20, 25, 30, 35, 40]
    assert monitor.events[0]["action_applied"] == "entropy" and model.entropy_weight == 0.2
    with pytest.raises(ValueError, match="start_step must be an integer >= 0"):
        CollapseMonitor(start_step=-1)


def test_worsening_by_hand():
    from callbacks.collapse_monitor import worsening

    assert worsening(0.05, 0.02, "above") == pytest.approx(2.5) and worsening(0.01, 0.02, "above") == 0.5
    assert worsening(0.3, 0.9, "below") == pytest.approx(3.0) and worsening(0.9, 0.3, "below") == pytest.approx(1 / 3)
    assert worsening(0.1, None, "above") is None  # no best yet
    assert worsening(0.001, 0.0, "above") == math.inf and worsening(0.0, 0.0, "above") == 1.0
    assert worsening(0.0, 0.5, "below") == math.inf


@pytest.mark.parametrize("mode, values, detected_at", [
    # above, factor 2: best 0.04, then 0.02 (0.5x), 0.03 (1.5x the best 0.02), 0.05 (2.5x): detected at step 20
    ("above", [0.04, 0.02, 0.03, 0.05, 0.01], 20),
    # below, factor 2: 0.5, 0.9 (best), 0.5 (1.8x worse), 0.3 (3x): detected at step 20
    ("below", [0.5, 0.9, 0.5, 0.3, 0.9], 20),
])
def test_the_worsening_rule_judges_the_signal_against_its_best_so_far(tmp_path, mode, values, detected_at):
    monitor = CollapseMonitor(mode=mode, signal="val/signal", threshold=2.0, rule="worsening", watch_losses=False,
                              action="d_lr", action_value=0.5)
    model, trainer = _fit(tmp_path, monitor, values, max_steps=50)
    assert [e["g_step"] for e in monitor.events] == [detected_at]
    worse = 2.5 if mode == "above" else 3.0
    assert f"val/signal = {values[3]:g} {worse:g} times worse than its best so far, past 2" in monitor.events[0]["reason"]
    assert monitor.state_dict()["best"] == pytest.approx(min(values) if mode == "above" else max(values))
    assert [g["lr"] for opt in trainer.optimizers for g in opt.param_groups] == pytest.approx(
        [model.hparams.g_lr, 0.5 * model.hparams.d_lr])
    # the checkpoint key of a level-rule monitor is the one saved before rules existed, so old checkpoints resume
    assert "rule" in monitor.state_key and "rule" not in CollapseMonitor(signal="val/signal").state_key


def test_the_worsening_rule_starts_its_best_at_start_step_and_keeps_it_through_a_resume(tmp_path):
    # step 5: 0.01, not judged (before start_step 10), so not the best; step 10: 0.04 (first judged: the best);
    # step 15: 0.06 (1.5x); step 20: 0.09 (2.25x: detected). With 0.01 as the best, step 10 would have fired.
    monitor = CollapseMonitor(mode="above", signal="val/signal", threshold=2.0, rule="worsening", watch_losses=False,
                              start_step=10)
    _fit(tmp_path, monitor, [0.01, 0.04, 0.06, 0.09], max_steps=40)
    assert [e["g_step"] for e in monitor.events] == [20]
    restored = CollapseMonitor(mode="above", signal="val/signal", threshold=2.0, rule="worsening")
    restored.load_state_dict(monitor.state_dict())
    assert restored._best == pytest.approx(0.04)


def test_bad_rule_arguments_are_refused():
    with pytest.raises(ValueError, match="rule must be one of"):
        CollapseMonitor(rule="relative")
    with pytest.raises(ValueError, match="takes the threshold as a factor above 1"):
        CollapseMonitor(rule="worsening", threshold=0.3)
    with pytest.raises(ValueError, match="action 'd_lr' needs action_value > 0"):
        CollapseMonitor(action="d_lr")
