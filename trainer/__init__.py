"""The embedded trainer (FDLinear + GRPO stages over trl). Reads export folders; never touches the
database. Built in the trainer issue; the package exists now so the distribution's layout is fixed."""
