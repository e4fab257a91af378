"""Deep RL agents on gymnasium: one on-policy and one off-policy loop shared by every algorithm."""
