"""Engine adapters: one client per inference engine behind a common interface (ORCH-3054)."""
