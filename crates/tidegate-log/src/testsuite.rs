//! Fixtures shared by the tests of every log backend and of the crates built on them
//! (feature `testsuite`, for dev-dependencies only).
//!
//! - [`brokers`]: where the test brokers are (environment, with the usual defaults),
//!   and whether a test may skip when one is not running.
pub mod brokers;
pub mod conformance;
