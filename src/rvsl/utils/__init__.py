"""What training and evaluation share: atomic file writes, run folders, loggers, config helpers."""
