"""The model leaves Albor: Hugging Face and GGUF export, and the torch quantised weights for CPU completion.

``albor export hf CKPT OUT`` writes a folder ``transformers`` loads; ``albor export gguf CKPT OUT
--type f16|q8_0|q4_k_m`` writes one file llama.cpp loads. Both read the checkpoint's weights and its
own tokenizer, and write nothing at ``OUT`` until the whole export is done.
"""
