"""The synthetic 10-11 October day: price paths, agents, venue engines and the venues' frames."""
