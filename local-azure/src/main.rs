//! local-azure: Azure on one machine for edgevault's tests, demo and benchmarks.
//!
//! This is the crate skeleton; the emulator itself is built in the issues
//! "local-azure, part 1" and "local-azure, part 2".

fn main() -> anyhow::Result<()> {
    anyhow::bail!("local-azure is not built yet: see the issue \"local-azure, part 1\"")
}
