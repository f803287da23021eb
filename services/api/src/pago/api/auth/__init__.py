"""API keys: generation, hashing, and the dependency that turns a request into a principal."""
