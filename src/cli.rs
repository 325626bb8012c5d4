//! Subcommands of the `sluice` binary that talk to a running Sluice rather
//! than run one.

pub mod keys;
