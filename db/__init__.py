"""Database layer: engine, session factory, models, migrations, embedded server."""
