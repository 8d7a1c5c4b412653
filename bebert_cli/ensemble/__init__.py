"""BEBERT ensembles of binary members: AdaBoost / bagging training (`train`), the arithmetic
(`boosting`), and the self-describing ensemble directory with its combining model (`model`)."""
