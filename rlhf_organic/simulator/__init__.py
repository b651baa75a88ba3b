"""The organic-feedback simulator (``rlhf-organic simulate``): users of known types chat with a bot whose
replies have a known quality, and leave thumbs, dislike reasons and A/B choices.

``simulate.py`` holds the settings, the presets and the run that writes the logs (in the BB3x release
format, so ingest reads them as it reads real logs) and the ground truth; ``text.py`` turns its decisions
into English chat turns; ``ground_truth.py`` names the ground-truth files, the one part of the simulator
that stages reading a simulation folder (reward evaluation, the clean judge) depend on.
"""
