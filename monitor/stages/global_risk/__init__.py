"""Stage 2, the global risk stage: ``GlobalRisk`` and the pieces behind its facade."""
