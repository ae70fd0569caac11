"""Analysis of finished grids: paired statistics (:mod:`~experiments.analysis.statistics`), a grid's summary rows
(:mod:`~experiments.analysis.summary`), its Markdown tables (:mod:`~experiments.analysis.tables`), its figures
(:mod:`~experiments.analysis.plots`) and one tutor against another (:mod:`~experiments.analysis.compare`)."""
