"""The Swarm client library and the `swarm-ask` command."""
