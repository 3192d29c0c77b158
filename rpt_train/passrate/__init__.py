"""Pass rates of a policy on shard positions, before RL, and the choice of training positions by them.

``estimate``: the pure arithmetic (pass@k, the band and margin that keep a position, summaries);
``score``: ``rpt-train passrate`` (a model scores shard positions: the probability of the true next token
and the reward of greedy and sampled training rollouts), which writes a side file keyed by row identity;
``select``: reading that side file back for ``rpt-train run --pass-rates`` (which rows to train on).
"""
