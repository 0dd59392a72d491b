"""The SQLite transaction journal: schema, migrations, state transitions, recovery."""
