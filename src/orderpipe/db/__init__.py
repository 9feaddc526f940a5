"""Database layer: ORM tables, engine creation and the dialect-aware bulk upsert."""
