"""Teaching one tutor across many Students (``tsrl teach``): its config (:mod:`~experiments.teaching.config`), the
teaching loop (:mod:`~experiments.teaching.teach`), the files a run keeps and reads back
(:mod:`~experiments.teaching.files`) and its report (:mod:`~experiments.teaching.report`)."""
