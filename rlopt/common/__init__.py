"""Run directories, logging, checkpoints and seeding shared by both halves of the suite."""
