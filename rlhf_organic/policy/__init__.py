"""Policy training from organic feedback: methods, the shared base, evaluation."""
