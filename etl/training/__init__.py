"""Training: model families (``models``), speaker normalisation (``normalise``); the training
pipeline by step: ``config``, ``dataset``, ``folds``, ``fitting``, ``evaluation``,
``cv_calibration``, run in order by ``train``; calibration (``calibration``), the escalation
operating point (``operating_point``), safe artifacts (``artifacts``), the model registry
(``registry``) and prediction on files (``predict``).
"""
