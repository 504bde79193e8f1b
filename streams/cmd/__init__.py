"""``liqmon`` subcommands that run a long-lived process or talk to one (worker, live, stress, spiral)."""
