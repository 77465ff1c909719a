"""Code the benchmark scripts share; it is not part of the `cardiolora` package that sites install.

* `lib.harness` — the federated comparison behind ``compare.py`` (`run_comparison`), with its sites
  (`lib.sites`), method runners (`lib.runners`) and tables, Markdown and curves (`lib.tables`);
* `lib.paired` — per-patient scores and paired statistics (``compare.py``, ``robustness.py``);
* `lib.readme_blocks` — the machine line and the README blocks every benchmark writes.

The scripts run as ``.venv/bin/python benchmarks/<name>.py``: Python puts the script's folder
(``benchmarks/``) first on ``sys.path``, so ``from lib.readme_blocks import machine_line`` resolves with
nothing installed. The tests get the same folder from ``pythonpath`` in ``pyproject.toml``.
"""
