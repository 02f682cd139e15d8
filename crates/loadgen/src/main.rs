//! `audin-loadgen`: drives operators and calls against a running `audin-server`.
fn main() {}
