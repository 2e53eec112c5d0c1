"""The embedded trainer: FDLinear (fdlinear.py), the rewards (rewards.py), presets (config.py), the model
builder and loader (model.py), GRPO stages over trl (train.py), prediction, evaluation and ablations.
Reads export folders and writes run folders; never touches the database (docs/fdlinear.md, docs/guide/training.md)."""
