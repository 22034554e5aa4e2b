"""Work-pool and concurrency-limit setup, serve entry points."""
