"""Stage "adapt": drift detectors, what triggers a training round, LoRA training with peft, the
candidate's training and judging, the kappa gate and the promotion decision. `training.py`,
`candidate.py` and `bootstrap.py` import torch; the rest is pure."""
