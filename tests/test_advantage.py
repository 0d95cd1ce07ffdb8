import torch

from chessrl.advantage import group_advantages, player_returns


def test_equal_rewards_give_zero_advantage():
    ret = torch.full((3, 8), 0.7)
    adv, zero = group_advantages(ret, torch.ones(3, 8, dtype=torch.bool))
    assert torch.equal(adv, torch.zeros(3, 8))
    assert zero.all()


def test_group_of_one_is_finite_and_zero():
    adv, zero = group_advantages(torch.tensor([[2.5], [-1.0]]), torch.ones(2, 1, dtype=torch.bool))
    assert torch.isfinite(adv).all()
    assert torch.equal(adv, torch.zeros(2, 1))
    assert zero.all()


def test_shift_invariance_and_unit_std():
    g = torch.Generator().manual_seed(0)
    ret = torch.randn(4, 16, generator=g)
    valid = torch.ones(4, 16, dtype=torch.bool)
    a, _ = group_advantages(ret, valid)
    b, _ = group_advantages(ret + 5.0, valid)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.mean(-1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(a.std(-1, unbiased=False), torch.ones(4), atol=1e-4)


def test_invalid_members_are_excluded_and_exactly_zero():
    ret = torch.tensor([[1.0, 3.0, 100.0]])
    valid = torch.tensor([[True, True, False]])
    adv, zero = group_advantages(ret, valid, scale="none")
    assert adv[0, 2] == 0.0
    assert torch.allclose(adv[0, :2], torch.tensor([-1.0, 1.0]))  # mean over valid members only
    assert not zero.any()


def test_dr_grpo_does_not_divide_by_std():
    ret = torch.tensor([[0.0, 4.0]])
    adv, _ = group_advantages(ret, torch.ones(1, 2, dtype=torch.bool), scale="none")
    assert torch.equal(adv, torch.tensor([[-2.0, 2.0]]))


def test_returns_sum_and_terminal():
    # one trajectory, 4 plies: root moves at 0 and 2, the other side at 1 and 3; last ply unplayed
    reward = torch.tensor([[[0.1, -0.2, 0.3, 9.0]]])
    value = torch.tensor([[[0.1, 0.5, 0.8, 9.0]]])
    mover_root = torch.tensor([[[True, False, True, False]]])
    played = torch.tensor([[[True, True, True, False]]])
    rv = torch.zeros(1, 1)
    s = player_returns(reward, value, mover_root, played, rv, "sum")
    assert torch.allclose(s, torch.tensor([[[0.4, -0.2]]]))
    t = player_returns(reward, value, mover_root, played, rv, "terminal")
    assert torch.allclose(t, torch.tensor([[[0.8, -0.8]]]))  # last played ply was the root's


def test_rank_advantages_count_only_the_order_of_valid_returns():
    valid = torch.tensor([[True, True, True, True, False]])
    small = torch.tensor([[0.0, 0.01, 0.01, 0.02, 9.0]])  # quiet moves: tiny gaps
    big = torch.tensor([[-5.0, 0.3, 0.3, 7.0, -9.0]])  # same order, huge gaps
    a, zero = group_advantages(small, valid, scale="rank")
    b, _ = group_advantages(big, valid, scale="rank")
    # mean over the 4 valid members of sign(own - other): below 3 -> -3/4, tie + one below
    assert a.tolist() == [[-0.75, 0.0, 0.0, 0.75, 0.0]] == b.tolist()
    assert not zero.any() and float(a.sum()) == 0.0
    for n in (1, 3, 16):  # ties, a group of one, and an all-tied group are exactly 0
        adv, zero = group_advantages(
            torch.full((2, n), 0.4), torch.ones(2, n, dtype=torch.bool), scale="rank"
        )
        assert torch.equal(adv, torch.zeros(2, n)) and zero.all()
