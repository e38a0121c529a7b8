"""Distillation: a student trained on a teacher's next-token distributions (online, or from top-k shards)."""
