"""The SAGE student: config, model, safetensors checkpoints (no pickle) and its engine."""
