"""The optimizer's parts, one module per contract: AdamW and its parameter groups, the LR schedule,
global-norm clipping, and token-weighted gradient accumulation."""
