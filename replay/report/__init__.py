"""The replay report: what a run recorded, written as one self-contained HTML file."""
