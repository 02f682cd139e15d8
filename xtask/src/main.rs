//! `cargo xtask`: project automation (setup, test, bench, demo, dist).
fn main() {}
