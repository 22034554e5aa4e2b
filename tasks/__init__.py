"""insarflow stage modules: plain typed functions plus thin Prefect task wrappers."""
