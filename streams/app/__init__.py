"""The faust application: its topics, tables, agents and the stages they checkpoint."""
