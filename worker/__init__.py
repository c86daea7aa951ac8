"""The Swarm worker: MDP/0.2 worker sessions, one per model instance (slot)."""
