//! Recording echo backend: answers every request with what it received, and records it.
