"""The project's RNN-T loss against a brute-force sum over every alignment path."""

import itertools

import pytest
import torch

from train.loss import rnnt_loss


def brute_force_nll(logits, targets, t_len, u_len):
    """-log of the sum over all alignments of one utterance, path by path."""
    lp = torch.log_softmax(logits, -1)
    paths = []
    # An alignment puts the U labels among the first T - 1 + U moves; the rest are blanks
    # that advance t; a final blank at (T - 1, U) ends it.
    for label_moves in itertools.combinations(range(t_len - 1 + u_len), u_len):
        t = u = 0
        score = lp.new_zeros(())
        for move in range(t_len - 1 + u_len):
            if move in label_moves:
                score = score + lp[t, u, targets[u]]
                u += 1
            else:
                score = score + lp[t, u, 0]
                t += 1
        paths.append(score + lp[t_len - 1, u_len, 0])
    return -torch.logsumexp(torch.stack(paths), 0)


def _case(seed, b=3, t=5, u=3, v=6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, u + 1, v, generator=g, dtype=torch.float64) * 2
    targets = torch.randint(1, v, (b, u), generator=g)
    t_len = torch.tensor([t, t - 2, 1])[:b]
    u_len = torch.tensor([u, 1, 0])[:b]
    return logits.requires_grad_(), targets, t_len, u_len


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_and_gradient_match_brute_force(seed):
    logits, targets, t_len, u_len = _case(seed)
    loss = rnnt_loss(logits, targets, t_len, u_len)
    ref = torch.stack([brute_force_nll(logits[i, :t_len[i], :u_len[i] + 1], targets[i],
                                       int(t_len[i]), int(u_len[i]))
                       for i in range(len(t_len))])
    assert torch.allclose(loss, ref, rtol=1e-12, atol=1e-12)
    g_loss, = torch.autograd.grad(loss.sum(), logits)
    g_ref, = torch.autograd.grad(ref.sum(), logits)
    assert torch.allclose(g_loss, g_ref, rtol=1e-10, atol=1e-12)
    # Padding beyond each row's lengths gets no gradient.
    assert torch.all(g_loss[1, int(t_len[1]):] == 0)
    assert torch.all(g_loss[2, :, 1:] == 0)


def test_gradcheck():
    logits, targets, t_len, u_len = _case(3, b=2, t=4, u=2, v=4)
    assert torch.autograd.gradcheck(lambda x: rnnt_loss(x, targets, t_len, u_len), (logits,))


def test_single_path_case_is_exact():
    # T = 1, U = 0: the only alignment is one blank.
    logits = torch.tensor([[[[0.3, -1.0, 2.0]]]], dtype=torch.float64)
    loss = rnnt_loss(logits, torch.zeros(1, 0, dtype=torch.int64), torch.tensor([1]),
                     torch.tensor([0]))
    assert float(loss) == pytest.approx(-float(torch.log_softmax(logits[0, 0, 0], -1)[0]))


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(logits=a["logits"][0]), "logits must be"),
    (lambda a: a.update(targets=a["targets"][:, :1]), "targets must be"),
    (lambda a: a.update(logit_lengths=torch.tensor([0, 2])), "logit_lengths"),
    (lambda a: a.update(target_lengths=torch.tensor([3, 0])), "target_lengths"),
    (lambda a: a.update(targets=torch.tensor([[1, 9], [1, 1]])), "token ids"),
])
def test_bad_input_is_named(change, message):
    args = {"logits": torch.zeros(2, 3, 3, 4), "targets": torch.ones(2, 2, dtype=torch.int64),
            "logit_lengths": torch.tensor([3, 2]), "target_lengths": torch.tensor([2, 1])}
    change(args)
    with pytest.raises(ValueError, match=message):
        rnnt_loss(args["logits"], args["targets"], args["logit_lengths"],
                  args["target_lengths"])
