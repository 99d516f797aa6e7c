"""Where a run's data comes from: a pg_dump snapshot or a generated demo."""
