"""``liqmon bench``: throughput, latency and scale figures. Outside the product's import graph."""
