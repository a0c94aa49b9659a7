"""The GRPO maths against numbers worked by hand (the working is in the comments)."""

import math

import pytest
import torch

from mmrl.models.logprobs import entropy_from_logits
from mmrl.rl import algo


def test_group_advantages_group_scale():
    # group 1: rewards 1, 0, 2 -> mean 1, unbiased std sqrt(((0)^2 + 1 + 1) / 2) = 1 -> A = 0, -1/1.0001, 1/1.0001
    # group 2: rewards 3, 3, 3 -> mean 3, std 0 -> A = 0 / 1e-4 = 0, zero spread
    adv = algo.group_advantages(torch.tensor([1.0, 0.0, 2.0, 3.0, 3.0, 3.0]), 3, "group")
    expected = [0.0, -1 / 1.0001, 1 / 1.0001, 0.0, 0.0, 0.0]
    assert adv.advantages.tolist() == pytest.approx(expected, abs=1e-6)
    assert adv.group_mean.tolist() == [1.0, 3.0]
    assert adv.group_std.tolist() == pytest.approx([1.0, 0.0])
    assert adv.zero_spread.tolist() == [False, True]


def test_group_advantages_batch_and_none_scale():
    # rewards 0, 2 | 4, 4: group means 1, 4 -> centred -1, 1, 0, 0
    # batch: mean 2.5, squared deviations 6.25 + 0.25 + 2.25 + 2.25 = 11, unbiased var 11 / 3, std 1.91485
    rewards = torch.tensor([0.0, 2.0, 4.0, 4.0])
    batch = algo.group_advantages(rewards, 2, "batch")
    std = math.sqrt(11 / 3)
    assert batch.advantages.tolist() == pytest.approx([-1 / (std + 1e-4), 1 / (std + 1e-4), 0, 0], abs=1e-6)
    none = algo.group_advantages(rewards, 2, "none")
    assert none.advantages.tolist() == [-1.0, 1.0, 0.0, 0.0]
    assert none.zero_spread.tolist() == [False, True]


def test_group_advantages_rejects_ragged_batch():
    with pytest.raises(ValueError, match="multiple of 4"):
        algo.group_advantages(torch.zeros(6), 4)


def test_k3_kl_by_hand():
    # d = ref - logp: d = 0 -> 1 - 0 - 1 = 0; d = 1 -> e - 2 = 0.718282; d = -0.5 -> e^-0.5 + 0.5 - 1 = 0.106531
    kl = algo.k3_kl(torch.tensor([-1.0, -2.0, -1.0]), torch.tensor([-1.0, -1.0, -1.5]))
    assert kl.tolist() == pytest.approx([0.0, math.e - 2, math.exp(-0.5) - 0.5], abs=1e-6)


def test_token_level_clipping_by_hand():
    # one sequence, A = +1, eps 0.2 / 0.3; log ratios 0, ln 1.5, ln 0.5:
    #   rho = 1 -> -min(1, 1) = -1; rho = 1.5 -> -min(1.5, 1.3) = -1.3 (clipped high);
    #   rho = 0.5 -> -min(0.5, 0.8) = -0.5
    logps = torch.log(torch.tensor([[0.5, 0.75, 0.25]]))
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    mask = torch.ones(1, 3)
    out = algo.per_token_loss(logps, old, torch.tensor([1.0]), mask, epsilon_low=0.2, epsilon_high=0.3)
    assert out.per_token_loss[0].tolist() == pytest.approx([-1.0, -1.3, -0.5], abs=1e-6)
    assert out.per_token_kl is None
    # clip fractions with A > 0: only rho = 1.5 > 1.3 is high-clipped; low needs A < 0
    low, high = algo.clip_masks(out.ratio, torch.tensor([1.0]), 0.2, 0.3)
    assert low.tolist() == [[False, False, False]] and high.tolist() == [[False, True, False]]
    # with A = -1: rho = 1 -> -min(-1, -1) = 1; 1.5 -> -min(-1.5, -1.3) = 1.5; 0.5 -> -min(-0.5, -0.8) = 0.8
    neg = algo.per_token_loss(logps, old, torch.tensor([-1.0]), mask, epsilon_low=0.2, epsilon_high=0.3)
    assert neg.per_token_loss[0].tolist() == pytest.approx([1.0, 1.5, 0.8], abs=1e-6)
    low, high = algo.clip_masks(neg.ratio, torch.tensor([-1.0]), 0.2, 0.3)
    assert low.tolist() == [[False, False, True]] and high.tolist() == [[False, False, False]]


def test_sequence_level_ratio_gspo():
    # log ratios 0.2 and -0.1 on the two real tokens, the padded third ignored: mean 0.05, rho = e^0.05 = 1.051271
    logps = torch.tensor([[-1.0, -2.0, -9.0]])
    old = torch.tensor([[-1.2, -1.9, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    log_w = algo.importance_log_weights(logps, old, mask, "sequence")
    assert log_w.shape == (1, 1) and log_w.item() == pytest.approx(0.05, abs=1e-6)
    out = algo.per_token_loss(
        logps, old, torch.tensor([2.0]), mask, epsilon_low=0.2, epsilon_high=0.2, level="sequence"
    )
    # A = 2, rho inside the clip range: loss = -2 * 1.051271 per sequence
    assert out.per_token_loss.shape == (1, 1)
    assert out.per_token_loss.item() == pytest.approx(-2 * math.exp(0.05), abs=1e-6)
    # grpo aggregation of a (B, 1) loss: the sequence's token mean of a constant is the constant
    assert algo.aggregate_loss(out.per_token_loss, mask, "grpo").item() == pytest.approx(-2 * math.exp(0.05))


def test_beta_adds_k3_per_token():
    # on-policy (rho = 1), A = 0: the surrogate is 0, the loss is beta * k3 = 0.1 * (e - 2) on the token where
    # ref - logp = 1
    logps = torch.tensor([[-2.0, -1.0]])
    out = algo.per_token_loss(
        logps, logps, torch.tensor([0.0]), torch.ones(1, 2), epsilon_low=0.2, epsilon_high=0.2, beta=0.1,
        ref_logps=torch.tensor([[-1.0, -1.0]]),
    )  # fmt: skip
    assert out.per_token_loss[0].tolist() == pytest.approx([0.1 * (math.e - 2), 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="ref_logps"):
        algo.per_token_loss(
            logps, logps, torch.tensor([0.0]), torch.ones(1, 2), epsilon_low=0.2, epsilon_high=0.2, beta=0.1
        )


def test_gradient_of_surrogate_on_policy_is_advantage():
    # at rho = 1 (old = logp detached) d(-rho * A)/d logp = -A on every real token; padding gets no gradient
    logps = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = algo.per_token_loss(logps, logps.detach(), torch.tensor([0.5]), mask, epsilon_low=0.2, epsilon_high=0.2)
    # dapo over 2 tokens: loss = (-0.5 - 0.5) / 2 -> grad -0.25 per real token
    algo.aggregate_loss(out.per_token_loss, mask, "dapo", global_num_tokens=2).backward()
    assert logps.grad[0].tolist() == pytest.approx([-0.25, -0.25, 0.0])


def test_aggregations_by_hand():
    # per-token loss rows [1, 2, 3] (3 tokens) and [4, 0, 0] (1 token)
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # grpo: sequence means 2 and 4 -> 3, over 2 micro-batches -> 1.5
    assert algo.aggregate_loss(loss, mask, "grpo", num_micro_batches=2).item() == pytest.approx(1.5)
    # bnpo: (6 + 4) / 4 tokens = 2.5
    assert algo.aggregate_loss(loss, mask, "bnpo").item() == pytest.approx(2.5)
    # dr_grpo: 10 / (2 rows * 8 max tokens) = 0.625
    assert algo.aggregate_loss(loss, mask, "dr_grpo", max_completion_length=8).item() == pytest.approx(0.625)
    # dapo: 10 / (20 tokens in the global batch / 2 processes) = 1.0
    assert algo.aggregate_loss(loss, mask, "dapo", global_num_tokens=20, num_processes=2).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown loss type"):
        algo.aggregate_loss(loss, mask, "ppo")


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_micro_batch_split_sums_to_whole(loss_type):
    # grpo, dr_grpo and dapo do not depend on how the batch is cut into equal micro-batches (bnpo, like TRL's,
    # normalises per micro-batch and does)
    torch.manual_seed(0)
    loss = torch.randn(4, 5)
    mask = (torch.rand(4, 5) > 0.3).float()
    mask[:, 0] = 1
    kw = {"max_completion_length": 5, "global_num_tokens": mask.sum().item()}
    whole = algo.aggregate_loss(loss, mask, loss_type, num_micro_batches=1, **kw)
    parts = sum(
        algo.aggregate_loss(loss[i : i + 1], mask[i : i + 1], loss_type, num_micro_batches=4, **kw) for i in range(4)
    )
    assert parts.item() == pytest.approx(whole.item(), abs=1e-6)


def test_entropy():
    # a two-way 50/50 softmax has entropy ln 2; a near one-hot has ~0
    ent = entropy_from_logits(torch.tensor([[[0.0, 0.0], [50.0, 0.0]]]))
    assert ent.tolist()[0] == pytest.approx([math.log(2), 0.0], abs=1e-6)


def test_kl_bias_correction_weights_the_kl_by_the_ratio():
    # rho = e^(ln 2) = 2 with A = 0: the surrogate is -min(0, 0) = 0; k3 with ref - logp = 1 is e - 2, times rho 2
    logps = torch.tensor([[-1.0]], requires_grad=True)
    old, ref = torch.tensor([[-1.0 - math.log(2)]]), torch.tensor([[0.0]])
    kw = {"epsilon_low": 0.2, "epsilon_high": 0.2, "beta": 1.0, "ref_logps": ref}
    corrected = algo.per_token_loss(logps, old, torch.tensor([0.0]), torch.ones(1, 1), **kw)
    plain = algo.per_token_loss(logps, old, torch.tensor([0.0]), torch.ones(1, 1), kl_bias_correction=False, **kw)
    assert corrected.per_token_loss.item() == pytest.approx(2 * (math.e - 2), abs=1e-6)
    assert plain.per_token_loss.item() == pytest.approx(math.e - 2, abs=1e-6)
    # d/dlogp [rho * k3] with rho = e^(logp - old), k3 = e^(ref - logp) - (ref - logp) - 1:
    #   rho * k3 + rho * (1 - e^(ref - logp)) = 2 (e - 2) + 2 (1 - e) = -2
    corrected.per_token_loss.sum().backward()
    assert logps.grad.item() == pytest.approx(-2.0, abs=1e-5)


def test_sampler_correction_by_hand():
    # trainer logp - sampler logp per token: [0.5, -1.5, ln 4 = 1.386] and a padding position
    trainer = torch.tensor([[-1.0, -2.0, math.log(0.8), -5.0]])
    sampler = torch.tensor([[-1.5, -0.5, math.log(0.2), float("nan")]])  # NaN: the engine sent no log-prob
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    token = algo.sampler_correction(trainer, sampler, mask, "token_truncate", cap=3.0)
    # e^0.5 = 1.6487, e^-1.5 = 0.2231, 0.8 / 0.2 = 4 -> capped at 3, padding -> e^0 = 1
    torch.testing.assert_close(token, torch.tensor([[1.6487, 0.2231, 3.0, 1.0]]), atol=1e-4, rtol=0)
    masked = algo.sampler_correction(trainer, sampler, mask, "token_mask", cap=3.0)
    torch.testing.assert_close(masked, torch.tensor([[1.6487, 0.2231, 0.0, 1.0]]), atol=1e-4, rtol=0)
    # sequence: e^(0.5 - 1.5 + 1.386) = e^0.386 = 1.4715 (under the cap either way)
    for mode in ("sequence_truncate", "sequence_mask"):
        seq = algo.sampler_correction(trainer, sampler, mask, mode, cap=3.0)
        assert seq.shape == (1, 1) and abs(seq.item() - 1.4715) < 1e-4
    assert algo.sampler_correction(trainer, sampler - 3, mask, "sequence_mask", cap=3.0).item() == 0.0  # e^9.39


def test_sampler_correction_weights_the_surrogate_not_the_kl():
    # A = 1, on-policy (rho = 1): the policy term is -1 per token, times w = [2, 0.5]; the KL is added unweighted
    logps = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[-2.0, -1.0]])  # k3 = e^-1 + 1 - 1 = 0.3679, then 0
    weights = torch.tensor([[2.0, 0.5]])
    out = algo.per_token_loss(
        logps, logps.detach(), torch.tensor([1.0]), torch.ones(1, 2), epsilon_low=0.2, epsilon_high=0.2, beta=0.1,
        ref_logps=ref, sampler_weights=weights,
    )  # fmt: skip
    torch.testing.assert_close(out.per_token_loss, torch.tensor([[-2.0 + 0.03679, -0.5]]), atol=1e-4, rtol=0)
    out.per_token_loss.sum().backward()  # d/dlogp of -w * rho * A = -w; the weights themselves carry no gradient
    assert logps.grad[0, 1].item() == pytest.approx(-0.5)
