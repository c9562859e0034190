//! Shipped examples and policies.
