"""Model registry: versions with lineage, aliases with history, gates, audit trail."""
