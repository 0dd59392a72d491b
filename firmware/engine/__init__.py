"""Sans-I/O transaction logic: state machines fed with events that return actions."""
