"""The project's one SQL database: the declarative base (base.py), every table (tables.py), the
named migrations that create them (migrations.py) and the Database that owns the engine
(database.py). Stores (chat log, registry, eval store, job store) take a Database; none of them
creates tables or disposes an engine."""
