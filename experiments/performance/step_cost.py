"""Step cost: a Student epoch under each step pattern, as a ratio to plain supervised training of the same Student.

    python -m experiments.performance.step_cost [--device cuda] [--repeats 5] [--backbone xception41 --image-size 128] ...

Variants, all on the same data (the embedded benchmark, ``--train-size`` images), batch size and Student:

- ``plain``: plain supervised training: one training forward, unweighted cross-entropy, one backward, one Adam step;
- ``reference``: a RE-CREATION, for comparison only, of the reference implementation's step pattern (see
  :class:`ReferencePattern`): an eval forward for predictions, another eval forward for features, the weighted training
  forward and backward, an eval forward after the update, a Python loop over the batch for the rewards, and every state
  of the epoch kept at full feature width;
- ``tsrl``, ``tsrl_reference``, ``next_visit``, ``val_alignment``: this project's fused ``env.step`` with that reward,
  fixed random weights (no tutor): one training forward (the state comes from it), the weighted backward, and for the
  first two one no-grad forward after the update, for ``val_alignment`` one no-grad forward of a trusted batch of
  validation images (``trusted_batch_size``, default 32) before it;
- ``ppo_tsrl``, ``ppo_next_visit``, ``ppo_val_alignment``: the PPO tutor acting on the per-sample view and learning,
  its update at the end of each epoch included (SB3 rollout of one Student epoch, 8 PPO epochs over its transitions).

Method: see :mod:`experiments.performance.common` (whole epochs timed with ``time.perf_counter``, one untimed warm-up epoch per
variant, variants interleaved round by round, medians; the ratio is the median of per-round ratios to ``plain``). The
env's epoch-end evaluations are no-ops and the Student's warm-up epochs are skipped, for every variant alike.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from experiments.performance.common import (
    FixedWeightEpochs,
    PlainSupervised,
    TutoredEpochs,
    add_common_arguments,
    batches,
    describe,
    interleaved_times,
    make_env,
    setup,
    timing_table,
    trainer_of,
)
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.state import SampleHistory
from tsrl_env.student import FAKE_CLASS

VARIANTS = {
    "plain": "1 fwd + 1 bwd",
    "reference": "3 eval fwd + 1 fwd + 1 bwd, Python reward loop (re-creation)",
    "tsrl": "1 fwd + 1 bwd + 1 no-grad fwd",
    "tsrl_reference": "1 fwd + 1 bwd + 1 no-grad fwd",
    "next_visit": "1 fwd + 1 bwd",
    "val_alignment": "1 fwd + 1 bwd + 1 no-grad fwd of 32 val images",
    "ppo_tsrl": "1 fwd + 1 bwd + 1 no-grad fwd, PPO acts and learns",
    "ppo_next_visit": "1 fwd + 1 bwd, PPO acts and learns",
    "ppo_val_alignment": "1 fwd + 1 bwd + 1 no-grad fwd of 32 val images, PPO acts and learns",
}


class ReferencePattern:
    """RE-CREATION of the reference implementation's step, for comparison only; nothing else uses it.

    Per batch, as the reference does it (docs/design.md, "Known weaknesses of the reference"): the Student in eval mode
    runs one no-grad forward for the predictions and a second one for the features; the state ``[features, tanh(EMA loss),
    tanh(learned / 10), p_fake, onehot(correct)]`` is built at the backbone's full feature width and kept, with every
    other state of the epoch, in host memory; the Student in training mode runs the weighted forward and backward
    (weights fixed here, as for the fused variants); an eval-mode forward after the update gives the after
    predictions; a Python loop over the batch computes the rewards with the reference's branches.
    """

    def __init__(self, env: DeepfakeCurriculumEnv, seed: int = 0) -> None:
        self.trainer = trainer_of(env, seed)
        self.student, self.optimizer = self.trainer.student, self.trainer.optimizer
        self.history = SampleHistory(len(env.splits["train"]), env.config.ema_alpha, env.device)
        rng = np.random.default_rng(seed)
        self.weights = torch.from_numpy(rng.uniform(size=(env.steps_per_epoch, env.batch_size)).astype(np.float32)).to(env.device)
        self.epoch_states: list[torch.Tensor] = []
        self.epoch_rewards: list[list[float]] = []

    def epoch(self) -> None:
        self.epoch_states, self.epoch_rewards = [], []
        for step, (ids, images, labels) in enumerate(batches(self.trainer)):
            self.student.eval()
            with torch.no_grad():
                logits_before, _ = self.student(images)  # eval forward 1: predictions
                _, features = self.student(images)  # eval forward 2: features
            probabilities = logits_before.softmax(dim=1)
            p_before = probabilities.gather(1, labels.unsqueeze(1)).squeeze(1)
            correct_before = probabilities.argmax(dim=1) == labels
            state = torch.cat(
                [
                    features,
                    torch.tanh(self.history.ema_loss[ids]).unsqueeze(1),
                    torch.tanh(self.history.learned[ids].float() / 10.0).unsqueeze(1),
                    probabilities[:, FAKE_CLASS].unsqueeze(1),
                    F.one_hot(correct_before.long(), 2).float(),
                ],
                dim=1,
            )
            self.epoch_states.append(state.cpu())

            self.student.train()
            logits, _ = self.student(images)  # the weighted training forward and backward
            losses = F.cross_entropy(logits, labels, reduction="none")
            loss = (self.weights[step] * losses).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.history.observe(ids, losses.detach(), correct_before)

            self.student.eval()
            with torch.no_grad():
                logits_after, _ = self.student(images)  # eval forward 3: after the update
            p_after = logits_after.softmax(dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
            correct_after = logits_after.argmax(dim=1) == labels

            rewards = []
            for i in range(len(labels)):  # the reference's per-sample Python loop
                if not correct_before[i] and correct_after[i]:
                    reward = 1.0
                elif correct_before[i] and not correct_after[i]:
                    reward = -1.0
                elif correct_after[i]:
                    reward = 0.5 * (p_after[i] - p_before[i]).item()
                else:
                    reward = -0.5 * (p_after[i] - p_before[i]).item()
                rewards.append(reward)
            self.epoch_rewards.append(rewards)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.performance.step_cost", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="what to measure (default: all); plain is always measured",
    )
    args = parser.parse_args(argv)
    device = setup(args)
    epochs = args.repeats + 2  # the untimed epoch, the timed ones, and one to spare so no run reaches the episode's end

    data_env = make_env(args, "tsrl", epochs)
    runners = {"plain": PlainSupervised(data_env, args.seed).epoch}
    for name in (v for v in VARIANTS if v in args.variants and v != "plain"):
        if name == "reference":
            runners[name] = ReferencePattern(data_env, args.seed).epoch
        elif name.startswith("ppo_"):
            env = make_env(args, name.removeprefix("ppo_"), epochs)
            runners[name] = TutoredEpochs(env, args.seed, device).epoch
        else:
            env = data_env if name == "tsrl" else make_env(args, name, epochs)
            runners[name] = FixedWeightEpochs(env, "batch", args.seed).epoch

    times = interleaved_times(runners, args.repeats, device)
    print(describe(args, data_env))
    print(timing_table(times, "plain", data_env.steps_per_epoch, VARIANTS))


if __name__ == "__main__":
    main()
