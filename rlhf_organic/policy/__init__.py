"""Policy training from organic feedback: the shared-base model, the tiny base, the methods, the stage
(its evaluation and the clean judge live in ``rlhf_organic.evaluation``)."""
