"""Experiments: the application on top of the library (``agents`` and ``tsrl_env``), one room per job.

- :mod:`experiments.cli` and :mod:`experiments.commands`: the ``tsrl`` command line, one module per command, each
  imported only when named;
- :mod:`experiments.config`: run configs (``RunConfig``), read from YAML under ``configs/``, and their fingerprints;
- :mod:`experiments.preflight`: the checks every command runs before any work;
- :mod:`experiments.training`: running one Student under one tutor (checkpoints, stop signals, shared warm-ups);
- :mod:`experiments.records`: what a Student's run produced, and what produced it;
- :mod:`experiments.grid`: benchmark grids (``tsrl benchmark``): spec, plan, runner, cells on disk, summary files;
- :mod:`experiments.teaching`: teaching one tutor over many Students (``tsrl teach``);
- :mod:`experiments.evaluate`: saved Students tested on any dataset (``tsrl evaluate``);
- :mod:`experiments.protocol`: the evaluation protocol that grids and teaching keep;
- :mod:`experiments.analysis`: paired statistics, a grid's tables and figures; :mod:`experiments.report`: plain-text
  tables of runs for the terminal;
- :mod:`experiments.studies` and :mod:`experiments.performance`: research and performance scripts
  (``python -m experiments.studies.<name>``, ``python -m experiments.performance.<name>``), each folder with a README.

Data: ``configs/`` (run, benchmark and teaching configs), ``tutors/`` (saved tutors shipped as package data:
:mod:`agents.saved` registers each as the tutor ``NAME`` at the first lookup of a tutor, whether or not this package is
imported), ``results/`` (committed results, each folder with its README), ``notebooks/``.
"""
