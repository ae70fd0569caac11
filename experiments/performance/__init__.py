"""Performance scripts: what the tutor, the state and the process group cost on top of training the Student, one
module per question, each printing a table (``README.md`` here lists them with their commands).

Run one with ``python -m experiments.performance.<name> --help``. Tiny settings for a smoke test:
``--backbone test_resnet --image-size 32 --train-size 256 --repeats 2``. Numbers are only comparable within one run:
every table is measured side by side, variants interleaved, on an otherwise idle machine.
"""
