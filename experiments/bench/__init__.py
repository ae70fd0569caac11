"""Performance benchmarks of the curriculum environment, one module per question, each printing a table.

- :mod:`experiments.bench.step_cost`: cost of a Student epoch under each step pattern, as a ratio to plain training;
- :mod:`experiments.bench.memory`: peak memory of a tutored run at two training-set sizes, in separate processes;
- :mod:`experiments.bench.throughput`: samples per second through ``env.step`` for the batch env and the per-sample views;
- :mod:`experiments.bench.ddp_comm`: bytes per ``env.step`` each rank of a DDP process group hands to collectives, by kind.

Run one with ``python -m experiments.bench.<name> --help``. Tiny settings for a smoke test:
``--backbone test_resnet --image-size 32 --train-size 256 --repeats 2``. Numbers are only comparable within one run:
every table is measured side by side, variants interleaved, on an otherwise idle machine.
"""
