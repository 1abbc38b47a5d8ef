"""The numerics: the network (:mod:`.network`), the cyclical schedule (:mod:`.schedule`), the
mini-batch loop over a population (:mod:`.trainer`) and its update step (:mod:`.step`), one SPEC
experiment (:mod:`.experiment`), the gradient check (:mod:`.gradcheck`) and the LR range test
(:mod:`.lrrange`).

Nothing here parses flags or talks to MLflow or Optuna.
"""
