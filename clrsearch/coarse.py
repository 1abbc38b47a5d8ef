"""Coarse lambda search: lambda = 10^U(-5, -1), 10 values x 3 seeds, tracked in MLflow.

    python -m clrsearch.coarse [--n-trials 10] [--n-seeds 3] [--sampler random|tpe] [--study-name coarse]

Defaults come from ``studies/coarse.toml`` in the working directory when it
exists, else the built-in ones; flags override both. Rerunning a study with
the same name resumes it.
"""

from .cli.study import command

main = command("coarse", __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
