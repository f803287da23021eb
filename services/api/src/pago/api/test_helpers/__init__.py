"""Test helpers (test-mode keys only): drive the pipeline without a chain."""
