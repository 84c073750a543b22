"""Local, plain-PyTorch credit-risk models: modules and weight exchange (:mod:`models.nets`), the local
training loop and scaler (:mod:`models.train`), numpy-only metrics (:mod:`models.metrics`) and scorecard
scaling with reason codes (:mod:`models.scorecard`).

Nothing is imported here, so ``models.metrics`` and ``models.scorecard`` can be used without loading torch.
"""
