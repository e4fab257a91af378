"""Names of the alignment algorithms (importable without transformers, for the CLI's dispatch)."""

ALIGNMENT_ALGOS = ("sft", "rm", "dpo", "vpo", "online_dpo", "xpo", "online_vpo", "apo")
