"""Pieces every GR00T family shares: the Qwen tokenizer, image ops, head blocks, normalisation."""
