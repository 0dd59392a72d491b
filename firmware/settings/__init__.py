"""Terminal settings: the model, validation and atomic save with history."""
