//! A `wasi:cli/run` command with no HTTP handler: deploying it must be refused.
fn main() {
    println!("I only run from a command line.");
}
