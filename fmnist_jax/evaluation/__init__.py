"""Scoring trained members on the test set: ensemble votes (`ensemble`), test-time views (`tta`),
the run summary (`summary`), a checkpoint's full report (`run_report`) and its tables and plots
(`report`)."""
