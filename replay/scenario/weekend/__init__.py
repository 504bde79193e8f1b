"""The second scenario: a weekend depeg the monitor was never tuned to, and its calibration."""
