"""The improvement ladder after pre-training: LoRA instruct fine-tuning, SLERP merges, WANDA pruning, model cards."""
