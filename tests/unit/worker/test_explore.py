import numpy as np

from worker.experiments.explore import UCB1, EpsilonGreedy, Greedy, Thompson, make_policy


def bandit(policy, probs, rounds=4000, seed=0):
    """Pick the first item of each ordering; return pull counts per arm."""
    rng = np.random.default_rng(seed)
    k = len(probs)
    imps, clicks, pulls = np.zeros(k), np.zeros(k), np.zeros(k, int)
    scores = np.zeros(k)  # an uninformative model: the counts must do the work
    for _ in range(rounds):
        arm = policy.order(scores, imps, clicks)[0]
        pulls[arm] += 1
        imps[arm] += 1
        clicks[arm] += rng.random() < probs[arm]
    return pulls


def test_ucb_and_thompson_concentrate_on_the_best_arm():
    probs = [0.05, 0.10, 0.20, 0.08, 0.12]
    for policy in (UCB1(c=0.5), Thompson(rng=np.random.default_rng(1))):
        pulls = bandit(policy, probs)
        assert pulls.argmax() == 2
        assert pulls[2] > 0.6 * pulls.sum(), (type(policy).__name__, pulls)


def test_greedy_without_signal_never_explores():
    pulls = bandit(Greedy(), [0.05, 0.5])
    assert pulls[1] == 0  # stuck on the first item: why exploration exists


def test_epsilon_greedy_explores_at_rate_epsilon():
    policy = EpsilonGreedy(epsilon=0.2, rng=np.random.default_rng(3))
    for _ in range(2000):
        policy.order(np.arange(5.0), np.zeros(5), np.zeros(5))
    rate = policy.explored / policy.slots
    assert abs(rate - 0.2) < 0.02
    greedy_order = EpsilonGreedy(epsilon=0.0).order(np.arange(4.0), np.zeros(4), np.zeros(4))
    assert greedy_order == [3, 2, 1, 0]


def test_new_items_get_impressions_under_exploring_policies():
    # 20 established items with many impressions; one new item, same model score.
    scores = np.zeros(21)
    imps = np.r_[np.full(20, 5000.0), 0.0]
    clicks = np.r_[np.full(20, 500.0), 0.0]
    for name in ("ucb", "thompson", "epsilon"):
        policy = make_policy(name, seed=4, epsilon=0.3)
        shown_new = sum(20 in policy.order(scores, imps, clicks)[:3] for _ in range(1000))
        assert shown_new > 20, name
    assert sum(20 in Greedy().order(scores + np.r_[np.ones(20), 0], imps, clicks)[:3]
               for _ in range(50)) == 0
