"""Pipeline stages: stage 1 (per-asset engine), stage 2 (global risk), the spiral and the stress core."""
