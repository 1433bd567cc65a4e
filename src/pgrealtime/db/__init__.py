"""Database access: embedded server, migrations, caller-context queries."""
