"""The one training loop (asr_kd.training) on its own, without a domain: what fit promises every
Learner (speech DNNs and image classifiers build on it)."""
import pytest
import torch
import torch.nn as nn

from asr_kd.distill import DistillationLoss
from asr_kd.training import Batch, Learner, fit


class Recorder(Learner):
    """Stops after ``last`` epochs; records what the loop told it."""

    def __init__(self, last: int, seed: int = 0):
        torch.manual_seed(seed)
        model = nn.Linear(4, 3)
        super().__init__(model, torch.optim.SGD(model.parameters(), lr=0.1), DistillationLoss(temperature=2.0),
                         name=f"r{last}")
        self.last, self.progress, self.ends = last, [], []

    def trains_in(self, epoch):
        return super().trains_in(epoch) and epoch <= self.last

    def before_step(self, progress):
        self.progress.append(progress)

    def end_epoch(self, epoch, wall_s):
        self.ends.append((epoch, self.examples, self.labelled))
        self.history.append({"epoch": epoch, "loss": self.loss_sum / self.examples})


def batches(epoch):
    g = torch.Generator().manual_seed(epoch)
    return [Batch(torch.randn(5, 4, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(4)], 4


def test_fit_shares_each_batch_and_its_prepare_among_the_learners_that_train():
    prepared = []

    def prepare(b):  # once per batch, whatever the number of learners
        prepared.append(1)
        return Batch(b.x, b.y, teacher_logits=torch.zeros(len(b.x), 3))

    short, long = Recorder(last=1), Recorder(last=3)
    fit([short, long], 3, batches, prepare, progress=False)
    assert len(prepared) == 3 * 4
    assert short.ends == [(1, 20, 20)] and [e for e, _, _ in long.ends] == [1, 2, 3]
    assert long.progress[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]  # epochs done, before each step


def test_a_restored_learner_continues_where_an_uninterrupted_one_is():
    straight = Recorder(last=3)
    fit([straight], 3, batches, progress=False)
    first = Recorder(last=2)
    fit([first], 2, batches, progress=False)
    resumed = Recorder(last=3, seed=1)  # other initial weights: the checkpoint replaces them
    resumed.restore(first.checkpoint(2))
    fit([resumed], 3, batches, progress=False)
    assert [e for e, _, _ in resumed.ends] == [3] and len(resumed.history) == 3
    assert torch.equal(resumed.model.weight, straight.model.weight)


def test_a_nan_loss_names_the_learner_epoch_and_batch():
    r = Recorder(last=1)

    def nan_batches(epoch):
        return [Batch(torch.full((2, 4), float("nan")), torch.zeros(2, dtype=torch.long))], 1

    with pytest.raises(FloatingPointError, match="r1: loss is nan at epoch 1, batch 0"):
        fit([r], 1, nan_batches, progress=False)
