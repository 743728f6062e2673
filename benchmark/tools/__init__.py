"""The sweep runner (run), the figures and tables of finished sweeps (plots), trajectory pictures of saved
models (trajectories) and adaptation curves of evaluated initialisations (adaptation_curves).
Run each as `python -m benchmark.tools.NAME --help` from the repository root."""
