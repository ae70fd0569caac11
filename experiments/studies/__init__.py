"""Studies: research scripts run as ``python -m experiments.studies.<name>``, each answering one question with a table
or a figure (``README.md`` here lists them with their commands); their results stay where their configs say, under
``experiments/results``."""
