"""fusmae_fast: a fast, faithful, tested Fus-MAE (Chan-To-Hing & Veeravalli, IGARSS 2024)."""

__version__ = "0.1.0"
