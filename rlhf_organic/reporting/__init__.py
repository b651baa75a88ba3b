"""Reports a person reads: one per run (``run.py``) and one per ablation (``ablation.py``), written as
Markdown and self-contained HTML from one document model (``doc.py``)."""
