"""Per-view token masks: exact count, True = masked, optional sharing across modalities."""
import numpy as np
import pytest

from seamo_jax.data import masking


@pytest.mark.parametrize("tokens,ratio", [(16, 0.75), (196, 0.75), (5, 0.5), (10, 0.0), (10, 1.0), (49, 0.9)])
def test_exact_count_per_view(tokens, ratio):
    mask = masking.random_token_masks(np.random.default_rng(0), 4, 2, tokens, ratio)
    assert mask.shape == (4, 2, tokens) and mask.dtype == bool
    assert (mask.sum(-1) == int(np.floor(ratio * tokens + 0.5))).all()


def test_num_masked_rounds_half_up_and_checks():
    assert masking.num_masked(5, 0.5) == 3
    assert masking.num_masked(196, 0.75) == 147
    assert masking.num_tokens(224, 16) == 196
    with pytest.raises(ValueError):
        masking.num_tokens(30, 8)


def test_count_rule_is_the_shared_one():
    """seamo_jax/mask_count.py: one rule for data and model (T = 49 at 0.5 used to give 25 here, 24 there)."""
    from seamo_jax import mask_count

    assert masking.num_masked(49, 0.5) == mask_count.num_masked(49, 0.5) == 25
    assert masking.random_token_masks(np.random.default_rng(0), 2, 2, 49, 0.5).sum(-1).tolist() == [[25, 25]] * 2
    assert mask_count.num_masked(45, 0.7) == 32  # 0.7 * 45 = 31.499999999999996 in floating point
    with pytest.raises(ValueError):
        mask_count.num_masked(10, 1.5)


def test_shared_and_independent_masks():
    rng = np.random.default_rng(0)
    shared = masking.random_token_masks(rng, 4, 2, 64, 0.75, shared_across_modalities=True)
    np.testing.assert_array_equal(shared[:, 0], shared[:, 1])
    assert not np.array_equal(shared[0, 0], shared[1, 0])  # seasons still independent
    independent = masking.random_token_masks(rng, 4, 2, 64, 0.75)
    assert not np.array_equal(independent[:, 0], independent[:, 1])


def test_every_token_equally_likely():
    rng = np.random.default_rng(0)
    freq = np.mean([masking.random_token_masks(rng, 1, 1, 16, 0.75)[0, 0] for _ in range(2000)], axis=0)
    assert np.abs(freq - 0.75).max() < 0.05


def test_masks_are_the_first_k_of_the_draws_argsort():
    """The partition gives the masks the argsort did (runs resumed across the change draw the same masks)."""
    for seed in range(20):
        for tokens, ratio in ((196, 0.75), (49, 0.5), (5, 0.5), (4, 1.0), (4, 0.0)):
            draws = np.random.default_rng(seed).random((3, 2, tokens))
            expected = np.zeros(draws.shape, bool)
            np.put_along_axis(expected, np.argsort(draws, -1)[..., :masking.num_masked(tokens, ratio)], True, -1)
            got = masking.random_token_masks(np.random.default_rng(seed), 3, 2, tokens, ratio)
            np.testing.assert_array_equal(got, expected)
