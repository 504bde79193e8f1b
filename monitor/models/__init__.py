"""Risk models: the pure maths and state machines of RISK_MODEL.md (margin, loops, peg, liquidity, cascade)."""
