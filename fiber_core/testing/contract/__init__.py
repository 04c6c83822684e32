"""The contract suite: what every backend must do (see fiber_core.testing)."""
