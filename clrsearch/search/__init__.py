"""The searches as Optuna studies.

- :mod:`.study`: create or load a study, its sampler, pruner, planned lambdas and fine grid;
- :mod:`.queue`: where studies live, the study lock, claiming trials, heartbeats, recovering dead workers' trials;
- :mod:`.population`: trials trained together as one population, and their results told to the study;
- :mod:`.workers`: the helper processes of ``--workers N``;
- :mod:`.summary`: the trials table and figures; :mod:`.final`: the final model;
- :mod:`.runner`: :class:`~.runner.StudyRunner`, a study end to end.
"""
