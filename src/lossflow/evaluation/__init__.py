"""Offline evaluation, in pieces that import only what they need.

- ``metrics``: metrics per task (scikit-learn, no matplotlib), shared with monitoring and A/B;
- ``threshold``: the binary decision threshold chosen on validation;
- ``plots``: diagnostic figures (matplotlib);
- ``report``: metrics and figures of one model on one split, as the training flow logs them.
"""
