"""Sparse networks: score-searched masks on frozen pretrained weights (``lottery_jackpot``) and dynamic channel
pruning with self-supervised mask predictors (``ftwt``)."""
