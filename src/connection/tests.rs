//! Per-phase unit tests over the simulated network.
