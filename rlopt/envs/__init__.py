"""Environment construction, normalisation and state snapshots."""
