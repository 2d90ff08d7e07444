"""Developer tools: CLI, demo, traffic simulator, report charts, embedded broker + Redis."""
