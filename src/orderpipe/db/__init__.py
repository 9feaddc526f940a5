"""Database layer: ORM tables (`models`), engines (`engine`, `mysql`), the dialect-aware upsert
statements (`upsert`), the one write path (`writer`) and the reads services need (`queries`)."""
