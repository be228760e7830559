//! Micro benchmarks of the engine's building blocks.
fn main() {}
