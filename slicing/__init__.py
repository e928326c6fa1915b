"""Pure slicing logic: request model, multi-domain decomposition, constraints. No I/O."""
