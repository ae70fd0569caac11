"""Records: what a Student's training produced (:mod:`~experiments.records.student_run`), how the environment's steps
become one (:mod:`~experiments.records.recorder`), and what produced it beyond its settings
(:mod:`~experiments.records.provenance`)."""
