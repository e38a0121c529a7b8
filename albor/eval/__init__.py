"""Evaluation: validation perplexity, HumanEval pass@k, and the sandbox that runs completions."""
