"""Running one Student: :mod:`~experiments.training.student` trains it under one tutor (``train_student``, and
``follow_student`` on the other ranks of a process group), with its epoch checkpoints
(:mod:`~experiments.training.checkpoint`), stop signals (:mod:`~experiments.training.signals`), warm-ups shared with
the Students that start alike (:mod:`~experiments.training.warmups`), its progress display
(:mod:`~experiments.training.progress`) and a tutor saved by an earlier run (:mod:`~experiments.training.saved_tutor`)."""
