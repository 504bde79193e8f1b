"""The stablecoin peg monitor: band state machines per venue, venue-local depegs, the index."""
