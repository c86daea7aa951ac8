"""The Swarm broker: MDP/0.2 routing, consensus jobs, voting and peer metrics."""
