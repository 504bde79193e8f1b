"""Lending loops (RISK_MODEL.md §2): positions, health factors and the LoopBook index."""
